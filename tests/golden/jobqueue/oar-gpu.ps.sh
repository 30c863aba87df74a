#!/usr/bin/env bash

#OAR -n psdist-ps
#OAR -q default
#OAR -l /nodes=1/core=2,walltime=02:00:00
export MALLOC_TRIM_THRESHOLD_=1073741824 MALLOC_MMAP_THRESHOLD_=33554432
<python> -m distributed.cli.dask_worker tcp://<scheduler> --name psdist-ps --nthreads 2 --memory-limit 16.00GiB --nanny --death-timeout 60 --local-directory /tmp --resources psdist-ps=1
