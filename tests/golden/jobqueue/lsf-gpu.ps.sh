#!/usr/bin/env bash

#BSUB -J psdist-ps
#BSUB -q gpu
#BSUB -n 2
#BSUB -R "span[hosts=1]"
#BSUB -M 17180
#BSUB -W 02:00
export MALLOC_TRIM_THRESHOLD_=1073741824 MALLOC_MMAP_THRESHOLD_=33554432
<python> -m distributed.cli.dask_worker tcp://<scheduler> --name psdist-ps --nthreads 2 --memory-limit 16.00GiB --nanny --death-timeout 60 --local-directory ${TMPDIR:-/tmp} --resources psdist-ps=1
