"""``repro slurm``: the sbatch script of a paper-scale run on a SLURM cluster, printed (or written) ready to submit.

The script runs one ``torchrun`` per node (``srun``, one task a node) that meet through torchrun's c10d
rendezvous on the first node of the allocation, and trains one run into one run directory, which must be on a
file system that every node shares (``repro train`` checks it: a rank that does not see rank 0's directory, or
that would resume from another step, stops every rank before the first step). It survives the two ways a job
ends early:

- **the time limit**: ``--signal=B:USR1@GRACE`` makes SLURM send USR1 to the batch script GRACE seconds before
  the limit; the script's trap sends SIGTERM to the job step, torchrun forwards it to its workers, which finish
  their step, write ``checkpoints/last.pt`` (atomically) and exit; the script then requeues the job
  (``scontrol requeue``), and the requeued job runs the same command, which resumes from the checkpoint;
- **preemption**: SLURM sends SIGTERM to the job step (then SIGKILL after the partition's GraceTime), the workers
  checkpoint the same way, and ``--requeue`` puts the job back in the queue.

torchrun gives its workers ``--shutdown-timeout`` seconds after forwarding a signal before it kills them: it must
cover a step and the writing of a checkpoint (DiT-XL/2 with its EMA and AdamW state is about 10.8 GB), and GRACE
must cover that too.
"""

from __future__ import annotations

import shlex
from pathlib import Path

TEMPLATE = """#!/bin/bash
# {title}
# Written by: {command}
#SBATCH --job-name={job_name}
#SBATCH --nodes={nodes}
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node={gpus_per_node}
#SBATCH --cpus-per-task={cpus_per_task}
#SBATCH --time={time}
#SBATCH --requeue
#SBATCH --signal=B:USR1@{grace}
#SBATCH --open-mode=append
#SBATCH --output={log}
{extra}
set -u
cd {workdir}
# One run directory on a file system that every node shares: all ranks resume from its checkpoints/last.pt.
RUN={run_dir}
HEAD=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
export OMP_NUM_THREADS=${{OMP_NUM_THREADS:-8}}

# {grace} s before the time limit SLURM sends USR1 to this script: every rank finishes its step, writes the
# checkpoint and exits (SIGTERM to the job step, forwarded by torchrun), then the job goes back into the queue.
requeue() {{
    echo "$(date): USR1, the time limit is near: checkpoint, then requeue job $SLURM_JOB_ID"
    scancel --signal=TERM "$SLURM_JOB_ID.$STEP_ID"
    wait "$TRAIN"
    scontrol requeue "$SLURM_JOB_ID"
    exit 0
}}
trap requeue USR1

STEP_ID=0  # the first (and only) srun of this script is step 0
srun --kill-on-bad-exit=1 {python}-m torch.distributed.run \\
    --nnodes "$SLURM_NNODES" --nproc-per-node {gpus_per_node} \\
    --rdzv-id "$SLURM_JOB_ID" --rdzv-backend c10d --rdzv-endpoint "$HEAD:{port}" \\
    --signals-to-handle SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1 --shutdown-timeout {shutdown_timeout} \\
    -m repro.cli train --params {params} --scale {scale} --method {method} --seed {seed} --out "$RUN" --quiet &
TRAIN=$!
wait "$TRAIN"
status=$?
# 0: the run is complete (or was already); 75: stopped by a signal with its checkpoint written (SLURM requeues a
# preempted job itself)
echo "$(date): repro train exited with status $status"
exit $status
"""


def render(
    *,
    method: str,
    seed: int = 0,
    scale: str = "paper",
    params: str = "params.yaml",
    run_dir: str | None = None,
    nodes: int = 4,
    gpus_per_node: int = 8,
    cpus_per_task: int = 64,
    time: str = "48:00:00",
    grace: int = 600,
    shutdown_timeout: int = 480,
    port: int = 29500,
    workdir: str = ".",
    partition: str | None = None,
    account: str | None = None,
    python: str = "python ",
    command: str = "repro slurm",
) -> str:
    """The sbatch script (see the module docstring)."""
    if shutdown_timeout >= grace:
        raise ValueError(
            f"--shutdown-timeout: {shutdown_timeout} s is not allowed; must be shorter than --grace ({grace} s), so "
            "the checkpoint is written before SLURM's time limit"
        )
    for name, value in (("nodes", nodes), ("gpus-per-node", gpus_per_node), ("cpus-per-task", cpus_per_task)):
        if value < 1:
            raise ValueError(f"--{name}: {value} is not allowed; must be >= 1")
    run_dir = run_dir or f"runs/{scale}/{method}-s{seed}"
    extra = "".join(f"#SBATCH --{k}={v}\n" for k, v in (("partition", partition), ("account", account)) if v)
    return TEMPLATE.format(
        title=f"{scale}-scale run {method} seed {seed}: {nodes} node(s) x {gpus_per_node} GPU(s), torchrun + c10d",
        command=command,
        job_name=f"repro-{scale}-{method}-s{seed}",
        nodes=nodes,
        gpus_per_node=gpus_per_node,
        cpus_per_task=cpus_per_task,
        time=time,
        grace=grace,
        log=f"{Path(run_dir).parent}/%x-%j.log",
        extra=extra,
        workdir=shlex.quote(workdir),
        run_dir=shlex.quote(run_dir),
        port=port,
        shutdown_timeout=shutdown_timeout,
        python=python,
        params=shlex.quote(params),
        scale=shlex.quote(scale),
        method=shlex.quote(method),
        seed=seed,
    )
