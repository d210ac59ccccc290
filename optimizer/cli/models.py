"""``moa-opt models``: list the models an endpoint serves."""

from __future__ import annotations

import argparse
import asyncio

from optimizer.providers import PRESETS, Router

__all__ = ["register"]


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Adds the ``models`` command."""
    parser = commands.add_parser(
        "models",
        help="list the models an endpoint serves",
        description="List the models an endpoint serves (GET /v1/models).",
    )
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--provider", choices=[*PRESETS, "local"], help="a preset provider, or the embedded models"
    )
    where.add_argument("--base-url", metavar="URL", help="any OpenAI-compatible endpoint")
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    """Runs the command."""
    for model in asyncio.run(_list(args)):
        print(model)
    return 0


async def _list(args: argparse.Namespace) -> list[str]:
    router = Router(base_url=args.base_url)
    try:
        return await router.list_models(args.provider)
    finally:
        await router.aclose()
