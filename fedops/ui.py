"""What the tasks print: a step heading, then indented detail lines."""
from __future__ import annotations


def step(message: str) -> None:
    print(f"==> {message}", flush=True)


def detail(message: str) -> None:
    print(f"    {message}", flush=True)
