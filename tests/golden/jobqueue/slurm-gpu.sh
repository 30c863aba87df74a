#!/usr/bin/env bash

#SBATCH -J psdist-worker
#SBATCH -p gpu
#SBATCH -n 1
#SBATCH --cpus-per-task=8
#SBATCH --mem=32G
#SBATCH -t 02:00:00
#SBATCH --gres=gpu:1
export MALLOC_TRIM_THRESHOLD_=1073741824 MALLOC_MMAP_THRESHOLD_=33554432
<python> -m distributed.cli.dask_worker tcp://<scheduler> --name dummy-name --nthreads 8 --memory-limit 32.00GiB --nanny --death-timeout 60 --local-directory ${TMPDIR:-/tmp} --resources GPU=1
