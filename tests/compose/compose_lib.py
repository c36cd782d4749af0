"""Reading docker-compose.yaml, .env.example and settings.py the way docker compose does.

No Docker engine is needed: the compose file is checked statically. The
interpolation here follows the Compose specification (docs.docker.com, "Interpolation"):
${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error}, ${VAR?error},
${VAR:+alt}, ${VAR+alt}, $VAR, and $$ for a literal dollar sign.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yaml"
ENV_EXAMPLE = REPO / ".env.example"
SETTINGS_FILE = REPO / "settings.py"
DOCKERFILE = REPO / "Dockerfile"
SCHEMA_FILE = Path(__file__).resolve().parent / "compose-spec.json"

# A name counts as a secret when it contains one of these words (PASSWORD, SECRET,
# TOKEN, KEY: the passwords, the JWT secret, the model server's token, MinIO/S3 keys).
SECRET_WORDS = ("PASSWORD", "SECRET", "TOKEN", "KEY")

_REF = re.compile(
    r"\$\$"                                                   # escaped dollar
    r"|\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}"
    r"|\$(?P<bare>[A-Za-z_][A-Za-z0-9_]*)"
)


def is_secret(name: str) -> bool:
    """PASSWORD, SECRET, TOKEN or KEY in the name; a *_FILE or *_PATH names where one is kept."""
    upper = name.upper()
    if upper.endswith(("_FILE", "_PATH")):
        return False
    return any(word in upper for word in SECRET_WORDS)


@dataclass(frozen=True)
class Ref:
    """One variable reference: ${name<op><arg>} (op is '' for ${name} and $name)."""

    name: str
    op: str
    arg: str
    text: str


def refs(text: str) -> list[Ref]:
    out = []
    for m in _REF.finditer(text):
        if m.group(0) == "$$":
            continue
        name = m.group("name") or m.group("bare")
        out.append(Ref(name, m.group("op") or "", m.group("arg") or "", m.group(0)))
    return out


class InterpolationError(ValueError):
    pass


def interpolate(text: str, env: dict[str, str]) -> str:
    def sub(m: re.Match) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m.group("name") or m.group("bare")
        op, arg = m.group("op") or "", m.group("arg") or ""
        value = env.get(name)
        is_set, non_empty = value is not None, bool(value)
        if op == ":-":
            return value if non_empty else interpolate(arg, env)
        if op == "-":
            return value if is_set else interpolate(arg, env)
        if op == ":?":
            if not non_empty:
                raise InterpolationError(f"{name}: {arg}")
            return value
        if op == "?":
            if not is_set:
                raise InterpolationError(f"{name}: {arg}")
            return value
        if op == ":+":
            return interpolate(arg, env) if non_empty else ""
        if op == "+":
            return interpolate(arg, env) if is_set else ""
        return value or ""

    return _REF.sub(sub, text)


# -- .env.example -----------------------------------------------------------------------

@dataclass
class EnvLine:
    name: str
    raw: str             # the value as written
    lineno: int
    comments: list[str]  # the comment lines written for it (see parse_env_file)


def parse_env_file(path: Path = ENV_EXAMPLE) -> list[EnvLine]:
    """`NAME=value` lines, each with its comment: the comment lines right above it, or,
    for variables listed one after another, the comment above the first of them."""
    out: list[EnvLine] = []
    block: list[str] = []
    last_was_variable = False
    for lineno, line in enumerate(path.read_text().splitlines(), start=1):
        stripped = line.strip()
        if not stripped:
            block, last_was_variable = [], False
            continue
        if stripped.startswith("#"):
            if last_was_variable:
                block = []
            block.append(stripped)
            last_was_variable = False
            continue
        m = re.fullmatch(r"([A-Za-z_][A-Za-z0-9_]*)=(.*)", stripped)
        if not m:
            raise ValueError(f"{path.name}:{lineno}: not NAME=value: {line!r}")
        out.append(EnvLine(m.group(1), m.group(2), lineno, list(block)))
        last_was_variable = True
    return out


def env_values(path: Path = ENV_EXAMPLE) -> dict[str, str]:
    """The file's values after interpolation, each line seeing the lines above it
    (as docker compose reads .env)."""
    env: dict[str, str] = {}
    for entry in parse_env_file(path):
        raw = entry.raw
        if len(raw) >= 2 and raw[0] == raw[-1] == "'":
            env[entry.name] = raw[1:-1]
            continue
        if len(raw) >= 2 and raw[0] == raw[-1] == '"':
            raw = raw[1:-1]
        env[entry.name] = interpolate(raw, env)
    return env


# -- settings.py ------------------------------------------------------------------------

def settings_variables() -> set[str]:
    """Every variable settings.py reads: _env("NAME", ...), _float(...), _int(...), os.environ."""
    text = SETTINGS_FILE.read_text()
    found = set(re.findall(r"""_(?:env|float|int|bool)\(\s*["']([A-Z][A-Z0-9_]*)["']""", text))
    found |= set(re.findall(r"""os\.(?:environ\.get|getenv)\(\s*["']([A-Z][A-Z0-9_]*)["']""", text))
    found |= set(re.findall(r"""os\.environ\[\s*["']([A-Z][A-Z0-9_]*)["']\s*\]""", text))
    return found


# -- docker-compose.yaml ----------------------------------------------------------------

def load_compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def strings(node, path=()):
    """(path, value) for every string value of a YAML document (keys excluded, as compose
    interpolates values only)."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield from strings(value, path + (key,))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from strings(value, path + (i,))
    elif isinstance(node, str):
        yield path, node


def compose_refs(doc: dict | None = None) -> list[tuple[tuple, Ref]]:
    doc = load_compose() if doc is None else doc
    return [(path, ref) for path, value in strings(doc) for ref in refs(value)]


def interpolate_doc(node, env: dict[str, str]):
    if isinstance(node, dict):
        return {k: interpolate_doc(v, env) for k, v in node.items()}
    if isinstance(node, list):
        return [interpolate_doc(v, env) for v in node]
    if isinstance(node, str):
        return interpolate(node, env)
    return node


def resolved_compose() -> dict:
    """The compose file as `docker compose config` would see it with .env = .env.example."""
    return interpolate_doc(load_compose(), env_values())


def service_environment(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


def command_text(service: dict, key: str = "command") -> str:
    value = service.get(key)
    if value is None:
        return ""
    return value if isinstance(value, str) else " ".join(str(v) for v in value)


def healthcheck_text(service: dict) -> str:
    test = (service.get("healthcheck") or {}).get("test")
    if test is None:
        return ""
    return test if isinstance(test, str) else " ".join(str(v) for v in test)


def published_ports(service: dict) -> list[tuple[str, int, int]]:
    """(host_ip, published, target) of a service's ports, short or long syntax."""
    out = []
    for port in service.get("ports") or []:
        if isinstance(port, dict):
            out.append((port.get("host_ip", ""), int(port["published"]), int(port["target"])))
            continue
        spec = str(port).split("/", 1)[0]
        parts = spec.rsplit(":", 2)
        if len(parts) == 3:
            out.append((parts[0], int(parts[1]), int(parts[2])))
        elif len(parts) == 2:
            out.append(("", int(parts[0]), int(parts[1])))
        else:
            raise AssertionError(f"port {port!r} is not published to the host")
    return out


def is_one_shot(service: dict) -> bool:
    return str(service.get("restart", "no")) == "no" and "profiles" not in service
