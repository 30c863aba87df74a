#!/usr/bin/env bash

#$ -N psdist-ps
#$ -q gpu.q
#$ -l h_vmem=8G
#$ -l h_rt=02:00:00
#$ -cwd
#$ -j y
#$ -pe smp 2
export MALLOC_TRIM_THRESHOLD_=1073741824 MALLOC_MMAP_THRESHOLD_=33554432
<python> -m distributed.cli.dask_worker tcp://<scheduler> --name psdist-ps --nthreads 2 --memory-limit 16.00GiB --nanny --death-timeout 60 --local-directory ${TMPDIR:-/tmp} --resources psdist-ps=1
