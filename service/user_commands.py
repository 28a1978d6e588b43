"""`attnlab users {create,list,token,revoke,me}` and `attnlab audit`: the admin's commands.

They talk to a running service like `attnlab jobs` (ATTNLAB_URL, ATTNLAB_TOKEN or $ATTNLAB_HOME/token,
which on the service's machine is the admin's token). Light imports only at top level.
"""

from __future__ import annotations

import argparse

from service.commands import _client, _console, _guarded, _time

ROLES = ("admin", "user", "viewer")


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    users = subparsers.add_parser("users", help="create, list and revoke users' tokens (admins)",
                                  description="Users of a running service, each with a token and a role: admin "
                                              "(everything), user (own jobs), viewer (reads all).")
    _connection(users)
    actions = users.add_subparsers(dest="action", metavar="ACTION", required=True)
    create = actions.add_parser("create", help="create a user and print its token (shown once)")
    create.add_argument("name")
    create.add_argument("--role", choices=ROLES, default="user")
    create.set_defaults(func=run_create)
    actions.add_parser("list", help="users, roles, when made and revoked").set_defaults(func=run_list)
    token = actions.add_parser("token", help="give a user a new token (the old one stops working)")
    token.add_argument("name")
    token.set_defaults(func=run_token)
    revoke = actions.add_parser("revoke", help="refuse a user's token from now on")
    revoke.add_argument("name")
    revoke.set_defaults(func=run_revoke)
    actions.add_parser("me", help="who the token in use is").set_defaults(func=run_me)

    audit = subparsers.add_parser("audit", help="the audit log: who changed what, when (admins)")
    _connection(audit)
    audit.add_argument("--actor", help="only this user's actions")
    audit.add_argument("--action", help="only this action, e.g. job.cancel")
    audit.add_argument("--limit", type=int, default=50)
    audit.set_defaults(func=run_audit)


def _connection(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", help="service URL (ATTNLAB_URL)")
    parser.add_argument("--token", help="bearer token (ATTNLAB_TOKEN; default: $ATTNLAB_HOME/token)")


def _print_token(user: dict) -> None:
    out, _ = _console()
    out.print(f"user [bold]{user['name']}[/bold] ({user['role']}); its token, shown this once:")
    print(user["token"])


@_guarded
def run_create(args: argparse.Namespace) -> int:
    _print_token(_client(args).create_user(args.name, args.role))
    return 0


@_guarded
def run_token(args: argparse.Namespace) -> int:
    _print_token(_client(args).issue_token(args.name))
    return 0


@_guarded
def run_revoke(args: argparse.Namespace) -> int:
    user = _client(args).revoke_user(args.name)
    _console()[0].print(f"user [bold]{user['name']}[/bold]: token revoked at {_time(user['revoked_at'])}")
    return 0


@_guarded
def run_me(args: argparse.Namespace) -> int:
    me = _client(args).me()
    _console()[0].print(f"{me['name']} ({me['role']})")
    return 0


@_guarded
def run_list(args: argparse.Namespace) -> int:
    from rich.table import Table

    table = Table(box=None, header_style="bold")
    for column in ("NAME", "ROLE", "CREATED", "BY", "TOKEN ISSUED", "REVOKED"):
        table.add_column(column)
    for user in _client(args).users():
        table.add_row(user["name"], user["role"], _time(user["created_at"]), user["created_by"],
                      _time(user["token_issued_at"]), _time(user["revoked_at"]) if user["revoked_at"] else "")
    _console()[0].print(table)
    return 0


@_guarded
def run_audit(args: argparse.Namespace) -> int:
    from rich.table import Table

    page = _client(args).audit(actor=args.actor, action=args.action, limit=args.limit)
    table = Table(box=None, header_style="bold")
    for column in ("WHEN", "WHO", "ROLE", "ACTION", "TARGET", "OUTCOME"):
        table.add_column(column)
    for entry in page["items"]:
        outcome = entry["outcome"] + (f": {entry['reason']}" if entry["reason"] else "")
        table.add_row(_time(entry["at"]), entry["actor"], entry["role"], entry["action"], entry["target"], outcome)
    out = _console()[0]
    out.print(table)
    out.print(f"{len(page['items'])} of {page['total']} entries", style="dim")
    return 0
