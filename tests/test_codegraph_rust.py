"""Rust through tree-sitter: a small real-shaped crate and the code questions on it."""

from __future__ import annotations

import textwrap

import pytest

pytest.importorskip("tree_sitter_rust")

CRATE = {
    "geo/src/lib.rs": '''
        pub mod shapes;
        mod util;

        use crate::shapes::{Circle, Shape};

        pub fn total(shapes: &[Box<dyn Shape>]) -> f64 {
            shapes.iter().map(|s| s.area()).sum()
        }

        pub fn unit() -> Circle {
            util::log("unit");
            Circle::new(1.0)
        }
    ''',
    "geo/src/shapes.rs": '''
        pub trait Shape {
            fn area(&self) -> f64;
            fn name(&self) -> String {
                String::from("shape")
            }
        }

        pub struct Circle {
            pub r: f64,
        }

        impl Circle {
            pub fn new(r: f64) -> Self {
                Circle { r }
            }
            fn square(&self) -> f64 {
                self.r * self.r
            }
        }

        impl Shape for Circle {
            fn area(&self) -> f64 {
                3.14 * self.square()
            }
        }
    ''',
    "geo/src/util.rs": '''
        pub fn log(msg: &str) {
            println!("{}", msg);
        }
    ''',
}


def ask(host, relation, query):
    result = host.run("memory-query", {"mode": "code", "relation": relation, "query": query, "maxResults": 50})
    return [h["label"] for h in result.data]


def test_rust_crate(host, project):
    for rel, text in CRATE.items():
        p = project / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(textwrap.dedent(text).lstrip("\n"))
    data = host.run("memory-ingest", {"path": "geo"}).data
    assert data["files"] == 3 and not data["errors"]
    assert ask(host, "callers", "src.shapes.Circle.new") == ["src.unit"]
    assert ask(host, "callers", "src.util.log") == ["src.unit"]
    assert ask(host, "callers", "src.shapes.Circle.square") == ["src.shapes.Circle.area"]
    assert ask(host, "members", "src.shapes.Circle") == [
        "src.shapes.Circle.r", "src.shapes.Circle.new", "src.shapes.Circle.square", "src.shapes.Circle.area",
        "src.shapes.Shape.name"]
    assert ask(host, "implementors", "src.shapes.Shape") == ["src.shapes.Circle"]
    assert ask(host, "implementors", "src.shapes.Shape.area") == ["src.shapes.Circle.area"]
    assert ask(host, "file-symbols", "geo/src/shapes.rs") == [
        "src.shapes", "src.shapes.Shape", "src.shapes.Shape.area", "src.shapes.Shape.name", "src.shapes.Circle",
        "src.shapes.Circle.r", "src.shapes.Circle.new", "src.shapes.Circle.square", "src.shapes.Circle.area"]
