"""``python -m ractd_cli``: the ``ractd`` command (what ``torchrun -m ractd_cli`` starts in each worker)."""

from .cli import main

main()
