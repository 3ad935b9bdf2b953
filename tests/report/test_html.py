"""The markdown the report writes converts to HTML with nothing lost or left raw."""

from tslayers.report.html import markdown_to_html


def test_headings_tables_lists_and_inline_marks_convert_and_text_is_escaped(tmp_path):
    (tmp_path / "fig.png").write_bytes(b"\x89PNG fake")
    text = ("# Title\n\nA *note* with `a<b` and **bold** & more.\n\n- one\n- two\n\n"
            "| a | b |\n|---|---|\n| **+0.1 [+0.0, +0.2]** | x |\n\n![fig](fig.png)\n")
    page = markdown_to_html(text, tmp_path)
    assert "<title>Title</title>" in page and "<h1>Title</h1>" in page
    assert "<em>note</em>" in page and "<code>a&lt;b</code>" in page and "&amp; more" in page
    assert "<ul><li>one</li><li>two</li></ul>" in page
    assert "<th>a</th>" in page and "<td><strong>+0.1 [+0.0, +0.2]</strong></td>" in page
    assert 'src="data:image/png;base64,iVBORyBmYWtl"' in page
    assert "**" not in page and "|---|" not in page


def test_a_missing_figure_is_said_not_linked(tmp_path):
    page = markdown_to_html("![gone](gone.png)\n", tmp_path)
    assert "missing figure gone.png" in page and "<img" not in page
