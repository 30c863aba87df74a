#!/usr/bin/env bash

#OAR -n psdist-worker
#OAR -q default
#OAR -l /nodes=1/core=4,walltime=02:00:00
export MALLOC_TRIM_THRESHOLD_=1073741824 MALLOC_MMAP_THRESHOLD_=33554432
<python> -m distributed.cli.dask_worker tcp://<scheduler> --name dummy-name --nthreads 4 --memory-limit 8.00GiB --nanny --death-timeout 60 --local-directory /tmp
