"""The psdist benchmark suite (run it with ``python benchmarks/run_suite.py``; see docs/benchmarks.md).

One module per contender (``c_plain``, ``c_ddp``, ``c_ray``, ``c_rpc``, ``c_mpi``, ``c_psdist``),
per microbenchmark (``ps_micro``, ``loader``) and per concern (``workloads``, ``common``,
``contenders``, ``runner``, ``report``, ``plots``).
"""
