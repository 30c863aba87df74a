#!/usr/bin/env bash

#BSUB -J psdist-worker
#BSUB -q normal
#BSUB -n 4
#BSUB -R "span[hosts=1]"
#BSUB -M 8590
#BSUB -W 02:00
export MALLOC_TRIM_THRESHOLD_=1073741824 MALLOC_MMAP_THRESHOLD_=33554432
<python> -m distributed.cli.dask_worker tcp://<scheduler> --name dummy-name --nthreads 4 --memory-limit 8.00GiB --nanny --death-timeout 60 --local-directory ${TMPDIR:-/tmp}
