"""Figures drawn straight to PNG, without pyplot."""

from experiments import plotting


def test_a_figure_is_saved_as_png_with_its_title_wrapped(tmp_path):
  fig, axes = plotting.subplots(2, (4, 3))
  assert len(axes) == 2
  path = plotting.save(fig, tmp_path / "deep" / "f.png", "word " * 30)
  assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  title = fig._suptitle.get_text()
  assert all(len(line) <= 56 for line in title.split("\n")) and title.count("\n") >= 2

def test_a_curve_skips_missing_points_and_marks_where_a_run_diverged():
  _, ax = plotting.subplots(1, (3, 3))
  plotting.curve(ax, [1, 2, 3, 4], [1.0, None, -1.0, 2.0], {"label": "a"}, log=True,
                 diverged=True)
  line, cross = ax.get_lines()
  assert list(line.get_xdata()) == [1, 4] and list(cross.get_xdata()) == [4]
  plotting.curve(ax, [1], [None], {})  # Nothing to draw: nothing drawn.
  assert len(ax.get_lines()) == 2
  plotting.legend(ax)
  assert ax.get_legend() is not None
