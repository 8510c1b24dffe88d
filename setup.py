from setuptools import find_packages, setup

setup(
    name="ehft-plugin",
    version="0.1.0",
    description="Efficient Head Finetuning and layer-stratified PEFT for fairseq RoBERTa",
    packages=find_packages(include=["ehft_plugin", "ehft_plugin.*"]),
    package_data={"ehft_plugin": ["evaluate/references/*.json"]},
    python_requires=">=3.9",
    # fairseq itself is not listed: it installs as `fairseq` (upstream) or as the
    # `fairseq-fixed` fork, and the fork must be built without build isolation
    # (see scripts/setup_env.sh); both import as `fairseq`.
    install_requires=["numpy", "scipy", "torch>=2.0", "safetensors"],
    extras_require={"tokenisers": ["tokenizers", "sentencepiece"], "report": ["matplotlib"]},
    entry_points={"console_scripts": ["ehft=ehft_plugin.cli:main"]},
)
