#!/usr/bin/env bash

#$ -N psdist-worker
#$ -q all.q
#$ -l h_vmem=2G
#$ -l h_rt=02:00:00
#$ -cwd
#$ -j y
#$ -pe smp 4
export MALLOC_TRIM_THRESHOLD_=1073741824 MALLOC_MMAP_THRESHOLD_=33554432
<python> -m distributed.cli.dask_worker tcp://<scheduler> --name dummy-name --nthreads 4 --memory-limit 8.00GiB --nanny --death-timeout 60 --local-directory ${TMPDIR:-/tmp}
