#!/usr/bin/env condor_submit

MY.DaskWorkerName = "htcondor--$F(MY.JobId)--"
batch_name = psdist-ps
RequestCpus = MY.DaskWorkerCores
RequestMemory = floor(MY.DaskWorkerMemory / 1048576)
RequestDisk = floor(MY.DaskWorkerDisk / 1024)
MY.JobId = "$(ClusterId).$(ProcId)"
MY.DaskWorkerCores = 2
MY.DaskWorkerMemory = 8589934592
MY.DaskWorkerDisk = 10737418240
+MaxRuntime = 7200

Arguments = "-c 'export MALLOC_TRIM_THRESHOLD_=1073741824 MALLOC_MMAP_THRESHOLD_=33554432; <python> -m distributed.cli.dask_worker tcp://<scheduler> --name psdist-ps --nthreads 2 --memory-limit 8.00GiB --nanny --death-timeout 60 --local-directory $_CONDOR_SCRATCH_DIR --resources psdist-ps=1'"
Executable = /bin/sh

Queue
