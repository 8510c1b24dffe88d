"""What runs show: `ehft report` (report/: seeds pooled, methods compared, published tables
beside) and `ehft analyze` (analyze/: drift, heads, convergence of kept runs)."""
