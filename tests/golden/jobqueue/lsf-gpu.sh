#!/usr/bin/env bash

#BSUB -J psdist-worker
#BSUB -q gpu
#BSUB -n 8
#BSUB -R "span[hosts=1]"
#BSUB -M 34360
#BSUB -W 02:00
#BSUB -gpu "num=1:mode=exclusive_process"
export MALLOC_TRIM_THRESHOLD_=1073741824 MALLOC_MMAP_THRESHOLD_=33554432
<python> -m distributed.cli.dask_worker tcp://<scheduler> --name dummy-name --nthreads 8 --memory-limit 32.00GiB --nanny --death-timeout 60 --local-directory ${TMPDIR:-/tmp} --resources GPU=1
