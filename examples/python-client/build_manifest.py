"""Build ``persisted-documents.json`` (hash -> document, the format of GraphQL Code
Generator's client preset) from an ariadne-codegen client: the exact text of every
``gql("...")`` document in the generated ``client.py``.

    python build_manifest.py news_client/client.py > persisted-documents.json
    gateway persisted add persisted-documents.json
"""

from __future__ import annotations

import ast
import hashlib
import json
import sys
from pathlib import Path


def documents(client_py: Path) -> dict[str, str]:
    tree = ast.parse(client_py.read_text(encoding="utf-8"))
    found: dict[str, str] = {}
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "gql"
                and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            text = node.args[0].value
            found[hashlib.sha256(text.encode()).hexdigest()] = text
    return found


if __name__ == "__main__":
    json.dump(documents(Path(sys.argv[1])), sys.stdout, indent=2)
    sys.stdout.write("\n")
