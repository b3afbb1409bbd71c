"""Go through tree-sitter: a small real-shaped module (two packages) and the code questions on it."""

from __future__ import annotations

import pytest

pytest.importorskip("tree_sitter_go")

MODULE = {
    'geo/go.mod': '''
module example.com/geo

go 1.21
''',
    'geo/main.go': '''
package main

import (
	"fmt"

	"example.com/geo/shapes"
)

const Scale = 2

func total(all []shapes.Shape) float64 {
	sum := 0.0
	for _, s := range all {
		sum += s.Area()
	}
	return sum * Scale
}

func main() {
	c := shapes.NewCircle(1)
	fmt.Println(total([]shapes.Shape{c}), c.String())
}
''',
    'geo/shapes/circle.go': '''
package shapes

import (
	"fmt"
	"math"
)

// Circle is a round shape.
type Circle struct {
	base
	R float64
}

// NewCircle makes a circle of radius r.
func NewCircle(r float64) *Circle {
	return &Circle{base: base{label: "circle"}, R: r}
}

func (c *Circle) square() float64 { return c.R * c.R }

// Area of the circle.
func (c *Circle) Area() float64 { return math.Pi * c.square() }

func (c Circle) String() string { return fmt.Sprintf("circle(%v)", c.R) }

func (c *Circle) Name() string { return c.base.Name() }
''',
    'geo/shapes/shape.go': '''
// Package shapes holds plane figures.
package shapes

import "fmt"

// Shape is anything with an area.
type Shape interface {
	Area() float64
	fmt.Stringer
}

// Named has a name.
type Named interface {
	Name() string
}

// Solid is a named shape.
type Solid interface {
	Shape
	Named
}

type base struct {
	label string
}

func (b base) Name() string { return b.label }
''',
}


def ask(host, relation, query):
    result = host.run("memory-query", {"mode": "code", "relation": relation, "query": query, "maxResults": 50})
    return [h["label"] for h in result.data]


def write(project):
    for rel, text in MODULE.items():
        p = project / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)


def test_go_module(host, project):
    write(project)
    data = host.run("memory-ingest", {"path": "geo"}).data
    assert data["files"] == 3 and not data["errors"]
    # who calls: across packages through the import path in go.mod, and on the receiver
    assert ask(host, "callers", "shapes.NewCircle") == ["geo.main"]
    assert ask(host, "callers", "shapes.Circle.square") == ["shapes.Circle.Area"]
    assert ask(host, "callers", "geo.total") == ["geo.main"]
    assert ask(host, "callees", "geo.main") == ["geo.total", "shapes.Circle.String", "shapes.NewCircle"]
    # members: methods on *Circle and Circle, fields, and the field promoted from the embedded struct
    assert ask(host, "members", "shapes.Circle") == [
        "shapes.Circle.R", "shapes.Circle.square", "shapes.Circle.Area", "shapes.Circle.String", "shapes.Circle.Name",
        "shapes.base.label"]
    # implementors: implicit interfaces by method-set match (fmt.Stringer's String included)
    assert ask(host, "implementors", "shapes.Shape") == ["shapes.Circle", "shapes.Solid"]
    assert ask(host, "implementors", "shapes.Named") == ["shapes.Circle", "shapes.Solid", "shapes.base"]
    assert ask(host, "implementors", "shapes.Solid") == ["shapes.Circle"]
    assert ask(host, "implementors", "shapes.Shape.Area") == ["shapes.Circle.Area"]
    symbols = ["shapes.circle.go", "shapes.Circle", "shapes.Circle.R", "shapes.NewCircle", "shapes.Circle.square",
               "shapes.Circle.Area", "shapes.Circle.String", "shapes.Circle.Name"]
    assert ask(host, "file-symbols", "geo/shapes/circle.go") == symbols
    # a method that does not exist is a clear no
    assert host.run("memory-query", {"mode": "code", "relation": "exists", "query": "shapes.Circle.Perimeter"}
                    ).data["exists"] is False

    # one-file refresh: drop String(); Circle no longer satisfies Shape (its Stringer part), the rest stays
    circle = project / "geo/shapes/circle.go"
    circle.write_text(circle.read_text().replace("func (c Circle) String()", "func (c Circle) Label()"))
    data = host.run("memory-ingest", {"path": "geo/shapes/circle.go"}).data
    assert data["files"] == 1 and not data["errors"]
    assert ask(host, "implementors", "shapes.Shape") == ["shapes.Solid"]
    assert ask(host, "implementors", "shapes.Named") == ["shapes.Circle", "shapes.Solid", "shapes.base"]
    assert ask(host, "callers", "shapes.Circle.square") == ["shapes.Circle.Area"]
    assert ask(host, "file-symbols", "geo/shapes/circle.go") == [
        s.replace("String", "Label") for s in symbols]


def test_go_same_name_in_two_files(host, project):
    """Each file of a package may have its own func init(); both are kept, the second as init@<file>."""
    pkg = project / "app"
    pkg.mkdir()
    (pkg / "a.go").write_text("package app\n\nfunc init() { setup() }\n\nfunc setup() {}\n")
    (pkg / "b.go").write_text("package app\n\nfunc init() { setup() }\n")
    data = host.run("memory-ingest", {"path": "app"}).data
    assert data["files"] == 2 and not data["errors"] and data["functions"] == 3
    assert ask(host, "file-symbols", "app/b.go") == ["b.go", "app.init@b.go"]
    assert ask(host, "callers", "app.setup") == ["app.init", "app.init@b.go"]
