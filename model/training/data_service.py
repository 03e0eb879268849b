"""Training input on other machines: a tf.data service's dispatcher and workers, and the
trainer's side of it (`train.py --data_service grpc://HOST:PORT`).

    python -m model.training.data_service dispatcher --port 5050 --work_dir /mnt/dispatcher
    python -m model.training.data_service worker --dispatcher HOST:5050 --port 5051

The trainer sends its training pipeline, the reader's records -> clips ->
batches, to the service (`distribute`); the workers read the records and cut
the clips, the trainer only receives batches. It is the reader's whole-record
path (`preprocess.reader.make_dataset(ranged=False)`): the ranged read calls a
Python function, which a service cannot ship to its workers. Evaluation,
validation and precise BatchNorm's batches stay on the trainer. Importing
this module is light: TensorFlow loads when a server starts or a dataset is
distributed.
"""

import hashlib
import json
import os
import socket
import sys
import time

from preprocess.errors import ArgumentParser, UserError, run_command

# Dynamic sharding (tf.data's "distributed_epoch"): the dispatcher hands each
# shard of a pass to one worker at a time, so one pass of the service visits
# every video once, however many workers there are, and a worker that dies
# loses only what it had read and not yet sent (at most once). OFF
# ("parallel_epochs", Model Garden's choice with unseeded readers) would have
# every worker read the whole split in the seed's one order: the same clips
# from every worker.
PROCESSING_MODE = "distributed_epoch"
SCHEME = "grpc://"
CONNECT_RETRY_SECONDS = 1.0   # between attempts to reach a dispatcher that is not up yet


class DataServiceError(UserError):
    """A tf.data service that cannot be used as asked; the message says what to fix."""


def parse_address(address, flag="--data_service"):
    """`(host, port)` of `grpc://HOST:PORT` (or `HOST:PORT`), or a `DataServiceError`."""
    problem = address_problem(address, flag)
    if problem:
        raise DataServiceError(problem)
    host, _, port = address.removeprefix(SCHEME).rpartition(":")
    return host.strip("[]"), int(port)


def address_problem(address, flag="--data_service"):
    """What is wrong with a dispatcher's address, or None: the check of `flag`."""
    bare = address.removeprefix(SCHEME)
    host, _, port = bare.rpartition(":")
    if "://" in bare or not host or not port.isdigit() or not 0 < int(port) < 65536:
        return (f"{flag} {address} is not an address of the form grpc://HOST:PORT; give "
                "the one `python -m model.training.data_service dispatcher` printed")
    return None


def wait_for_dispatcher(address, seconds, flag="--data_service",
                        timeout_flag="--data_service_timeout"):
    """Returns once the dispatcher at `address` accepts a connection; a `DataServiceError`
    after `seconds` of trying.

    tf.data's own client retries an absent dispatcher for an hour, silently;
    a TCP connection says at once whether anything listens there.
    """
    host, port = parse_address(address, flag)
    deadline = time.monotonic() + seconds
    while True:
        left = deadline - time.monotonic()
        try:
            socket.create_connection((host, port), timeout=min(max(left, 0.1), 5)).close()
            return
        except OSError as error:
            reason = (error.strerror or str(error) or type(error).__name__).lower()
        left = deadline - time.monotonic()
        if left <= 0:
            raise DataServiceError(
                f"no tf.data service dispatcher answers at {host}:{port} ({reason}) "
                f"within {seconds:g} s; start one there (python -m "
                f"model.training.data_service dispatcher --port {port}), or fix {flag}, "
                f"or raise {timeout_flag}")
        time.sleep(min(CONNECT_RETRY_SECONDS, left))


def job_name(config, per_replica_batch, resume_epoch, cluster=None):
    """The service job a run's trainers share: one per run, batch and launch.

    Every trainer of a `--strategy multi_worker` run runs the same command in
    the same cluster, so they name the same job and share its batches (each
    batch goes to one trainer). Any other run names its own, even with the
    same `--output_dir` typed on another machine or from another folder: the
    name holds the run's settings, its records' fingerprint and its trainers
    (the cluster's addresses, or this host and the folder's absolute path).
    A relaunch that resumes from a later epoch starts a new job, as Model
    Garden names a new job after a preemption, instead of draining the old
    one's buffers; the batch size is in the name because a job's batches are
    already cut.
    """
    from model.training.run_dir import computing_options, fingerprint
    trainers = (sorted(cluster.addresses.values()) if cluster
                else [socket.gethostname(), os.path.abspath(config["output_dir"])])
    # The records by their fingerprint: hosts may mount them at other paths.
    run = json.dumps([config["output_dir"].rstrip("/"), fingerprint(config["records"]),
                      trainers, computing_options(config)], sort_keys=True, default=str)
    digest = hashlib.sha256(run.encode()).hexdigest()[:12]
    return f"twoplusone-{digest}-batch{per_replica_batch}-from{resume_epoch}"


def distribute(dataset, address, job):
    """`dataset` produced by the service's workers, in the job named `job`."""
    import tensorflow as tf
    return dataset.apply(tf.data.experimental.service.distribute(
        processing_mode=PROCESSING_MODE, service=address, job_name=job))


# -----------------------------------------------------------------------------
# The servers: python -m model.training.data_service dispatcher|worker
# -----------------------------------------------------------------------------

def build_parser():
    parser = ArgumentParser(prog="python -m model.training.data_service",
                            description=__doc__.split("\n\n")[0])
    roles = parser.add_subparsers(dest="role", required=True, metavar="dispatcher|worker",
                                  parser_class=ArgumentParser)
    dispatcher = roles.add_parser("dispatcher", help="the service's dispatcher: trainers "
                                  "and workers connect to it")
    dispatcher.add_argument("--port", type=int, default=5050,
                            help="port to listen on; 0 picks a free one and prints it "
                                 "(default: 5050)")
    dispatcher.add_argument("--work_dir", help="folder of the dispatcher's journal: with it, "
                            "a restarted dispatcher resumes its jobs (fault-tolerant mode); "
                            "without it, a restart loses them (default: none)")
    worker = roles.add_parser("worker", help="a worker: reads records and cuts clips for the "
                              "trainers")
    worker.add_argument("--dispatcher", required=True, metavar="HOST:PORT",
                        help="the dispatcher's address")
    worker.add_argument("--port", type=int, default=5051,
                        help="port to listen on; 0 picks a free one and prints it "
                             "(default: 5051)")
    worker.add_argument("--host", default=socket.gethostname(),
                        help="the name trainers reach this machine by; the dispatcher "
                             "hands it to them (default: this machine's host name)")
    worker.add_argument("--timeout", type=float, default=30,
                        help="seconds to wait for the dispatcher to answer before stopping "
                             "with an error (default: 30)")
    return parser


def main(argv=None):
    return run_command(command, sys.argv[1:] if argv is None else argv)


def command(argv):
    args = build_parser().parse_args(argv)
    if not 0 <= args.port < 65536:
        raise DataServiceError(f"--port {args.port} is not a port; give 0 to 65535")
    if args.role == "worker":
        wait_for_dispatcher(args.dispatcher, args.timeout, flag="--dispatcher",
                            timeout_flag="--timeout")
    from model import import_tensorflow, quiet_tensorflow_logs
    quiet_tensorflow_logs()
    service = import_tensorflow().data.experimental.service
    server = start_dispatcher(service, args) if args.role == "dispatcher" else start_worker(
        service, args)
    server.join()  # until killed
    return 0


def start_dispatcher(service, args):
    try:
        server = service.DispatchServer(service.DispatcherConfig(
            port=args.port, work_dir=args.work_dir, fault_tolerant_mode=bool(args.work_dir)))
    except Exception as error:  # a port in use, an unwritable work_dir: TensorFlow's words
        raise DataServiceError(f"could not start a dispatcher on port {args.port} "
                               f"({_first_line(error)})") from None
    port = server.target.rpartition(":")[2]
    state = (f"fault-tolerant, journal in {args.work_dir}" if args.work_dir
             else "no --work_dir: a restart loses its jobs")
    print(f"data_service: dispatcher at {SCHEME}{socket.gethostname()}:{port} ({state}); "
          f"train with --data_service {SCHEME}HOST:{port}", flush=True)
    return server


def start_worker(service, args):
    host, port = parse_address(args.dispatcher, "--dispatcher")
    try:
        server = service.WorkerServer(service.WorkerConfig(
            dispatcher_address=f"{host}:{port}", worker_address=f"{args.host}:%port%",
            port=args.port))
    except Exception as error:
        raise DataServiceError(f"could not start a worker on port {args.port} "
                               f"({_first_line(error)})") from None
    # The port bound, for --port 0: TensorFlow keeps it behind a private name.
    bound = server._address.rpartition(":")[2]
    print(f"data_service: worker at {args.host}:{bound}, serving the dispatcher at "
          f"{host}:{port}", flush=True)
    return server


def _first_line(error):
    return (str(error).strip() or type(error).__name__).splitlines()[0][:200]


if __name__ == "__main__":
    sys.exit(main())
