"""The ``ifseg-deploy`` command line. Each sub-command lives in its own module here and
exposes ``add_parser(subparsers)`` and ``run(args) -> int``; ``main`` discovers them."""
