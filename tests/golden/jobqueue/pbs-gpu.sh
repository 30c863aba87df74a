#!/usr/bin/env bash

#PBS -N psdist-worker
#PBS -q gpu
#PBS -l select=1:ncpus=8:ngpus=1:mem=32GB
#PBS -l walltime=02:00:00
export MALLOC_TRIM_THRESHOLD_=1073741824 MALLOC_MMAP_THRESHOLD_=33554432
<python> -m distributed.cli.dask_worker tcp://<scheduler> --name dummy-name --nthreads 8 --memory-limit 32.00GiB --nanny --death-timeout 60 --local-directory ${TMPDIR:-/tmp} --resources GPU=1
