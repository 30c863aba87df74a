#!/usr/bin/env bash

#SBATCH -J psdist-ps
#SBATCH -p cpu
#SBATCH -n 1
#SBATCH --cpus-per-task=2
#SBATCH --mem=8G
#SBATCH -t 02:00:00
export MALLOC_TRIM_THRESHOLD_=1073741824 MALLOC_MMAP_THRESHOLD_=33554432
<python> -m distributed.cli.dask_worker tcp://<scheduler> --name psdist-ps --nthreads 2 --memory-limit 8.00GiB --nanny --death-timeout 60 --local-directory ${TMPDIR:-/tmp} --resources psdist-ps=1
