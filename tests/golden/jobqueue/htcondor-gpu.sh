#!/usr/bin/env condor_submit

MY.DaskWorkerName = "htcondor--$F(MY.JobId)--"
batch_name = dummy-name
RequestCpus = MY.DaskWorkerCores
RequestMemory = floor(MY.DaskWorkerMemory / 1048576)
RequestDisk = floor(MY.DaskWorkerDisk / 1024)
MY.JobId = "$(ClusterId).$(ProcId)"
MY.DaskWorkerCores = 8
MY.DaskWorkerMemory = 34359738368
MY.DaskWorkerDisk = 21474836480
request_gpus = 1
+MaxRuntime = 7200

Arguments = "-c 'export MALLOC_TRIM_THRESHOLD_=1073741824 MALLOC_MMAP_THRESHOLD_=33554432; <python> -m distributed.cli.dask_worker tcp://<scheduler> --name dummy-name --nthreads 8 --memory-limit 32.00GiB --nanny --death-timeout 60 --local-directory $_CONDOR_SCRATCH_DIR --resources GPU=1'"
Executable = /bin/sh

Queue
