"""placeholder"""
def add_parser(sub, name):
    return sub.add_parser(name)
def run(args):
    raise NotImplementedError
