"""advkit's benchmark suites: `python -m scripts.bench [--only SUITE] [--quick] [--out FILE]`.

`harness` times and tabulates; `attacks`, `train` and `scale` are one suite
each; `__main__` lists them in `SUITES` and writes the tables. The methodology
is written once, in BENCHMARKS.md.
"""
