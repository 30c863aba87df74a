#!/usr/bin/env bash

#$ -N psdist-worker
#$ -q gpu.q
#$ -l h_vmem=4G,gpu=1
#$ -l h_rt=02:00:00
#$ -cwd
#$ -j y
#$ -pe smp 8
export MALLOC_TRIM_THRESHOLD_=1073741824 MALLOC_MMAP_THRESHOLD_=33554432
<python> -m distributed.cli.dask_worker tcp://<scheduler> --name dummy-name --nthreads 8 --memory-limit 32.00GiB --nanny --death-timeout 60 --local-directory ${TMPDIR:-/tmp} --resources GPU=1
