"""TypeScript and JavaScript through tree-sitter: a small real-shaped
project per language, and the code questions of ``@memory-query mode=code`` on it."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

pytest.importorskip("tree_sitter_typescript")
pytest.importorskip("tree_sitter_javascript")

TS = {
    "web/src/models/shape.ts": '''
        export interface Shape {
          area(): number;
          name(): string;
        }

        export abstract class BaseShape implements Shape {
          abstract area(): number;
          name(): string {
            return describe(this);
          }
        }

        export function describe(s: Shape): string {
          return `${s.name()} ${s.area()}`;
        }
    ''',
    "web/src/models/circle.ts": '''
        import { BaseShape } from "./shape";

        export class Circle extends BaseShape {
          radius: number;
          constructor(r: number) {
            super();
            this.radius = r;
          }
          area(): number {
            return Math.PI * this.square();
          }
          private square(): number {
            return this.radius * this.radius;
          }
        }
    ''',
    "web/src/index.ts": '''
        import { Circle } from "./models/circle";
        import * as shapes from "./models/shape";
        import express from "express";

        export const unit = () => new Circle(1);

        export function report(): string {
          const c = unit();
          return shapes.describe(c);
        }
    ''',
}

JS = {
    "lib/src/store.js": '''
        export class Store {
          constructor() { this.items = []; }
          put(item) { this.items.push(item); return this.count(); }
          count() { return this.items.length; }
        }

        export class CachedStore extends Store {
          put(item) { return super.put(item); }
        }
    ''',
    "lib/src/app.js": '''
        import { CachedStore } from "./store.js";

        export default function main() {
          const s = new CachedStore();
          return save(s, 1);
        }

        function save(store, x) {
          return store.put(x);
        }
    ''',
}


def write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(textwrap.dedent(text).lstrip("\n"))


def ask(host, relation, query, **extra):
    result = host.run("memory-query", {"mode": "code", "relation": relation, "query": query, "maxResults": 50,
                                       **extra})
    return [h["label"] for h in result.data]


def test_typescript_project(host, project):
    write(project, TS)
    data = host.run("memory-ingest", {"path": "web"}).data
    assert data["files"] == 3 and not data["errors"]
    assert data["classes"] == 3 and data["methods"] == 7     # interface methods included
    # who calls
    assert set(ask(host, "callers", "src.models.shape.describe")) == {"src.models.shape.BaseShape.name", "src.report"}
    assert ask(host, "callers", "src.models.circle.Circle") == ["src.unit"]          # new Circle(1)
    assert ask(host, "callers", "src.models.circle.Circle.square") == ["src.models.circle.Circle.area"]
    assert ask(host, "callers", "src.unit") == ["src.report"]
    # members of, with inherited ones
    members = ask(host, "members", "src.models.circle.Circle")
    assert members[:4] == ["src.models.circle.Circle.radius", "src.models.circle.Circle.constructor",
                           "src.models.circle.Circle.area", "src.models.circle.Circle.square"]
    assert "src.models.shape.BaseShape.name" in members
    # implementors: implements and extends, transitively; overriders of an interface method
    assert set(ask(host, "implementors", "src.models.shape.Shape")) == {
        "src.models.shape.BaseShape", "src.models.circle.Circle"}
    assert set(ask(host, "implementors", "src.models.shape.Shape.area")) == {
        "src.models.shape.BaseShape.area", "src.models.circle.Circle.area"}
    # file symbols in line order
    assert ask(host, "file-symbols", "web/src/models/shape.ts") == [
        "src.models.shape", "src.models.shape.Shape", "src.models.shape.Shape.area", "src.models.shape.Shape.name",
        "src.models.shape.BaseShape", "src.models.shape.BaseShape.area", "src.models.shape.BaseShape.name",
        "src.models.shape.describe"]
    # the package import is an external module, the relative ones are the ingested files
    imports = {tuple(r) for r in host.db.conn.execute(
        "SELECT s.label, d.label FROM edges e JOIN nodes s ON s.id=e.src JOIN nodes d ON d.id=e.dst "
        "WHERE e.type='imports'")}
    assert {("src", "src.models.circle"), ("src", "src.models.shape"), ("src", "express")} <= imports


def test_javascript_project(host, project):
    write(project, JS)
    data = host.run("memory-ingest", {"path": "lib"}).data
    assert data["files"] == 2 and not data["errors"]
    assert ask(host, "callers", "src.store.Store.count") == ["src.store.Store.put"]
    assert ask(host, "callers", "src.app.save") == ["src.app.main"]
    assert ask(host, "callers", "src.store.CachedStore") == ["src.app.main"]
    assert ask(host, "implementors", "src.store.Store") == ["src.store.CachedStore"]
    assert ask(host, "implementors", "src.store.Store.put") == ["src.store.CachedStore.put"]
    assert ask(host, "members", "src.store.CachedStore") == ["src.store.CachedStore.put", "src.store.Store.constructor",
                                                            "src.store.Store.count"]
    assert ask(host, "file-symbols", "lib/src/app.js") == ["src.app", "src.app.main", "src.app.save"]
    # an edited file alone is refreshed under the same module name
    app = project / "lib/src/app.js"
    app.write_text(app.read_text() + "\nexport function again() { return main(); }\n")
    again = host.run("memory-ingest", {"path": "lib/src/app.js"}).data
    assert again["nodesRemoved"] == 0
    assert ask(host, "callers", "src.app.main") == ["src.app.again"]
