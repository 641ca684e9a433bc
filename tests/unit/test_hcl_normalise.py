"""HCL normalisation: layout does not count, values do (hypothesis over generated templates)."""

from __future__ import annotations

from dataclasses import dataclass, replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from goldenimage.errors import TemplateError
from goldenimage.fingerprint import normalise_hcl

Scalar = str | int | bool
Value = Scalar | list[Scalar]


@dataclass(frozen=True)
class Block:
    kind: str
    labels: tuple[str, ...]
    attrs: tuple[tuple[str, Value], ...]
    children: tuple[Block, ...] = ()


@dataclass(frozen=True)
class Layout:
    """How to write a document: none of this may change the normalised form."""

    indent: str
    eq_space: tuple[str, str]
    blank_lines: int
    comments: bool
    trailing_comma: bool


idents = st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True)
text = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789 -_./:<>=", max_size=12)
scalars: st.SearchStrategy[Scalar] = st.one_of(text, st.integers(-(10**6), 10**6), st.booleans())
values: st.SearchStrategy[Value] = st.one_of(scalars, st.lists(scalars, max_size=4))
attrs = st.dictionaries(idents, values, max_size=4).map(lambda d: tuple(d.items()))

nested = st.builds(
    Block,
    kind=st.sampled_from(["provisioner", "validation", "tags"]),
    labels=st.lists(idents, max_size=1).map(tuple),
    attrs=attrs,
)
top_block = st.builds(
    Block,
    kind=st.sampled_from(["variable", "source", "locals", "build"]),
    labels=st.lists(idents, min_size=1, max_size=2, unique=True).map(tuple),
    attrs=attrs,
    children=st.lists(nested, max_size=3).map(tuple),
)
documents = st.lists(top_block, min_size=1, max_size=5, unique_by=lambda b: (b.kind, b.labels))
layouts = st.builds(
    Layout,
    indent=st.sampled_from(["  ", "    ", "\t", " "]),
    eq_space=st.sampled_from([(" ", " "), ("", ""), ("   ", " "), ("\t", "  ")]),
    blank_lines=st.integers(0, 2),
    comments=st.booleans(),
    trailing_comma=st.booleans(),
)


def render_scalar(v: Scalar) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    return f'"{v}"'


def render_value(v: Value, lay: Layout) -> str:
    if isinstance(v, list):
        inner = ", ".join(render_scalar(x) for x in v)
        return f"[{inner}{',' if lay.trailing_comma and v else ''}]"
    return render_scalar(v)


def render_block(b: Block, lay: Layout, depth: int = 0) -> list[str]:
    pad = lay.indent * depth
    labels = "".join(f' "{lab}"' for lab in b.labels)
    lines = []
    if lay.comments:
        lines.append(f"{pad}# block {b.kind}")
    lines.append(f"{pad}{b.kind}{labels} {{")
    before, after = lay.eq_space
    for k, v in b.attrs:
        tail = "  // note" if lay.comments else ""
        lines.append(f"{pad}{lay.indent}{k}{before}={after}{render_value(v, lay)}{tail}")
    for child in b.children:
        lines.extend([""] * lay.blank_lines)
        lines.extend(render_block(child, lay, depth + 1))
    lines.append(f"{pad}}}")
    return lines


def render(doc: list[Block], lay: Layout) -> str:
    out: list[str] = []
    if lay.comments:
        out.append("/* generated\n   for a test */")
    for b in doc:
        out.extend(render_block(b, lay))
        out.extend([""] * lay.blank_lines)
    return "\n".join(out) + "\n"


PLAIN = Layout("  ", (" ", " "), 1, False, False)


@settings(max_examples=60, deadline=None)
@given(documents, layouts, st.randoms(use_true_random=False))
def test_layout_comments_and_top_level_block_order_do_not_count(
    doc: list[Block], lay: Layout, rnd: object
) -> None:
    shuffled = list(doc)
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    assert normalise_hcl(render(shuffled, lay), "x.pkr.hcl") == normalise_hcl(render(doc, PLAIN), "x.pkr.hcl")


def _mutate(v: Value) -> Value:
    if isinstance(v, bool):
        return not v
    if isinstance(v, int):
        return v + 1
    if isinstance(v, str):
        return v + "x"
    return [*v, "extra"]


@settings(max_examples=60, deadline=None)
@given(documents, st.data())
def test_any_value_change_counts(doc: list[Block], data: st.DataObject) -> None:
    candidates = [(i, j) for i, b in enumerate(doc) for j in range(len(b.attrs))]
    if not candidates:
        # no attribute to change: add one instead
        changed = [replace(doc[0], attrs=(("added", 1),)), *doc[1:]]
    else:
        i, j = data.draw(st.sampled_from(candidates))
        k, v = doc[i].attrs[j]
        new_attrs = list(doc[i].attrs)
        new_attrs[j] = (k, _mutate(v))
        changed = list(doc)
        changed[i] = replace(doc[i], attrs=tuple(new_attrs))
    assert normalise_hcl(render(doc, PLAIN), "x.pkr.hcl") != normalise_hcl(
        render(changed, PLAIN), "x.pkr.hcl"
    )


def test_nested_block_order_counts() -> None:
    """Provisioners run in the order they are written: swapping them is a new image."""
    a = 'build {\n  provisioner "shell" { inline = ["a"] }\n  provisioner "ansible" { x = 1 }\n}\n'
    b = 'build {\n  provisioner "ansible" { x = 1 }\n  provisioner "shell" { inline = ["a"] }\n}\n'
    assert normalise_hcl(a, "b.pkr.hcl") != normalise_hcl(b, "b.pkr.hcl")


def test_list_order_counts() -> None:
    a = 'source "qemu" "d" {\n  boot_command = ["<enter>", "<wait>"]\n}\n'
    b = 'source "qemu" "d" {\n  boot_command = ["<wait>", "<enter>"]\n}\n'
    assert normalise_hcl(a, "s.pkr.hcl") != normalise_hcl(b, "s.pkr.hcl")


def test_expression_spacing_and_heredoc_style_do_not_count() -> None:
    a = "locals {\n  ok = length( var.x )>0\n  s = <<EOF\nhello\nEOF\n}\n"
    b = "locals {\n  ok = length(var.x) > 0\n  s = <<-EOT\n    hello\n    EOT\n}\n"
    assert normalise_hcl(a, "l.pkr.hcl") == normalise_hcl(b, "l.pkr.hcl")


def test_required_plugins_version_counts() -> None:
    tpl = 'packer {{\n  required_plugins {{\n    qemu = {{ version = "{}" }}\n  }}\n}}\n'
    assert normalise_hcl(tpl.format(">= 1.1.0"), "p") != normalise_hcl(tpl.format(">= 1.1.1"), "p")


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ('variable "x" {\n  default = \n}\n', 2),
        ('source "qemu" "d" {\n  a = 1\n  b = [1,\n}\n', 4),
        ('build {\n  sources = ["x"]\n', 3),
    ],
)
def test_malformed_template_names_file_and_line(text: str, line: int) -> None:
    with pytest.raises(TemplateError) as err:
        normalise_hcl(text, "packer/sources.pkr.hcl")
    msg = str(err.value)
    assert msg.startswith("packer/sources.pkr.hcl:")
    assert "\n" not in msg
    assert int(msg.split(":")[1]) == line, msg
    assert err.value.exit_code == 2


def test_list_of_objects_in_a_var_file_keeps_its_order() -> None:
    """Only blocks are sorted; a list of objects is a value (e.g. disk mappings)."""
    a = 'disks = [{ name = "a", size = 1 }, { name = "b", size = 2 }]\n'
    b = 'disks = [{ name = "b", size = 2 }, { name = "a", size = 1 }]\n'
    assert normalise_hcl(a, "x.pkrvars.hcl") != normalise_hcl(b, "x.pkrvars.hcl")


def test_error_message_stays_short() -> None:
    text = "\ufeff" + "# comment\n" * 200 + 'variable "x" {}\n'
    with pytest.raises(TemplateError) as err:
        normalise_hcl(text, "packer/variables.pkr.hcl")
    assert str(err.value).startswith("packer/variables.pkr.hcl:1:1: invalid HCL2")
    assert len(str(err.value)) < 250 and "\n" not in str(err.value)
