"""The rewrite stage's text transformations: wrapping, link tracking, pixel, unique id."""
from __future__ import annotations

import re
from typing import Callable

from hypothesis import given, settings, strategies as st
from twisted.trial.unittest import SynchronousTestCase

from jangotw.pipeline.text import (UNIQUE_ID_TOKEN, insert_pixel, pixel_tag, replace_unique_id,
                                   track_html_links, track_text_links, wrap_lines)


def _numbered() -> tuple[list[str], Callable[[str], str]]:
    """A track function that numbers destinations, and the list it records them in."""
    seen: list[str] = []

    def track(destination: str) -> str:
        if destination not in seen:
            seen.append(destination)
        return f"https://t.test/c/{seen.index(destination)}"
    return seen, track


class WrapTests(SynchronousTestCase):
    def test_breaks_after_the_last_whitespace_that_fits(self) -> None:
        """A long line is broken after whitespace, keeping the space as a soft break."""
        self.assertEqual(wrap_lines("aaa bbb ccc ddd", 8, "\n", False), "aaa bbb \nccc ddd")

    def test_short_lines_untouched(self) -> None:
        """Lines within the width, and their line ends, are left as they are."""
        text = "one two\r\nthree\r\n"
        self.assertEqual(wrap_lines(text, 10, "\r\n", False), text)

    def test_zero_width_is_off(self) -> None:
        self.assertEqual(wrap_lines("a " * 100, 0, "\n", False), "a " * 100)

    def test_uses_the_given_line_end(self) -> None:
        self.assertEqual(wrap_lines("aa bb cc\r\n", 4, "\r\n", False), "aa \r\nbb \r\ncc\r\n")

    def test_url_never_split(self) -> None:
        """A URL longer than the width stays whole on a line of its own."""
        url = "https://example.com/" + "x" * 80
        self.assertEqual(wrap_lines(f"see {url} now", 20, "\n", False), f"see \n{url} \nnow")

    def test_unbreakable_line_stays_long(self) -> None:
        word = "y" * 50
        self.assertEqual(wrap_lines(word, 10, "\n", False), word)

    def test_leading_indentation_not_broken_off(self) -> None:
        """A break never leaves a line holding only whitespace."""
        self.assertEqual(wrap_lines("        " + "z" * 30 + " end", 10, "\n", False),
                         "        " + "z" * 30 + " \nend")

    def test_runs_of_whitespace_stay_on_the_first_line(self) -> None:
        self.assertEqual(wrap_lines("abc   \tdef ghi", 9, "\n", False), "abc   \t\ndef ghi")

    def test_never_inside_an_html_tag(self) -> None:
        """Whitespace between attributes or inside quoted values is not a break point."""
        html = '<p>word <a href="https://x.test/" class="big button" title="a > b">link</a> end</p>'
        wrapped = wrap_lines(html, 12, "\n", True)
        self.assertEqual(wrapped, '<p>word \n<a href="https://x.test/" class="big button" title="a > b">link</a> \nend</p>')

    def test_tag_spanning_lines_is_protected(self) -> None:
        html = '<td style="color: red;\n  font-size: 12px; padding: 0 0 0 0; margin: 0 0 0 0;">xy</td>'
        self.assertEqual(wrap_lines(html, 20, "\n", True), html)

    def test_plain_text_has_no_tags(self) -> None:
        """In text/plain a "<" is just a character."""
        self.assertEqual(wrap_lines("<b and c> d", 5, "\n", False), "<b \nand \nc> d")

    def test_pre_and_comments_not_wrapped(self) -> None:
        html = "<pre>a b c d e f g h</pre> <!-- x y z w v u t --> i j"
        self.assertEqual(wrap_lines(html, 8, "\n", True), "<pre>a b c d e f g h</pre> \n<!-- x y z w v u t --> \ni j")

    def test_html_text_between_tags_is_wrapped(self) -> None:
        self.assertEqual(wrap_lines("<p>aaa bbb ccc</p>", 10, "\n", True), "<p>aaa \nbbb \nccc</p>")

    @settings(max_examples=300)
    @given(st.lists(st.one_of(st.sampled_from([" ", "  ", "\t", "\n", "\r\n", "<a href='x y'>", "</a>"]),
                              st.text("abcdefghé:/.", min_size=1, max_size=30)), max_size=40),
           st.integers(1, 40), st.booleans())
    def test_only_inserts_line_ends_after_whitespace(self, pieces: list[str], width: int, markup: bool) -> None:
        """Wrapping inserts line ends after whitespace and nothing else; a line stays longer
        than the width only when it has no break opportunity."""
        text = "".join(pieces)
        wrapped = wrap_lines(text, width, "\n", markup)
        self.assertEqual(_unwrap(text, wrapped), text)
        protected = [m.span() for m in re.finditer(r"<a href='x y'>", wrapped)] if markup else []
        offset = 0
        for line in re.split(r"\r?\n", wrapped):
            if len(line) > width:
                for found in re.finditer(r"[ \t]+(?=[^ \t])", line):
                    at = offset + found.start()
                    inside = any(start <= at < end for start, end in protected)
                    self.assertTrue(found.start() == 0 or inside, (line, width))
            offset += len(line) + 1 + (wrapped[offset + len(line):].startswith("\r\n"))


def _unwrap(original: str, wrapped: str) -> str:
    """Remove from C{wrapped} the line ends not in C{original} that follow whitespace."""
    out = []
    i = j = 0
    while j < len(wrapped):
        if i < len(original) and original[i] == wrapped[j]:
            out.append(wrapped[j])
            i += 1
            j += 1
        elif wrapped[j] == "\n" and j and wrapped[j - 1] in " \t":
            j += 1
        else:
            out.append(wrapped[j:])
            break
    return "".join(out)


class HtmlLinkTests(SynchronousTestCase):
    def track(self, html: str) -> tuple[str, list[str]]:
        seen, track = _numbered()
        return track_html_links(html, track), seen

    def test_href_replaced(self) -> None:
        out, seen = self.track('<a href="https://shop.test/a">A</a>')
        self.assertEqual(out, '<a href="https://t.test/c/0">A</a>')
        self.assertEqual(seen, ["https://shop.test/a"])

    def test_entities_unescaped_and_replacement_escaped(self) -> None:
        """The destination is the href with entities unescaped; the new value is escaped again."""
        seen: list[str] = []

        def track(destination: str) -> str:
            seen.append(destination)
            return "https://t.test/c?d=1&i=0&q=\"x\""
        out = track_html_links('<a href="https://shop.test/?a=1&amp;b=2&#38;c=3">A</a>', track)
        self.assertEqual(seen, ["https://shop.test/?a=1&b=2&c=3"])
        self.assertEqual(out, '<a href="https://t.test/c?d=1&amp;i=0&amp;q=&quot;x&quot;">A</a>')

    def test_single_quoted_and_unquoted_values(self) -> None:
        out, seen = self.track("<a href='https://s.test/1'>x</a><A HREF=https://s.test/2>y</A>")
        self.assertEqual(out, "<a href='https://t.test/c/0'>x</a><A HREF=\"https://t.test/c/1\">y</A>")
        self.assertEqual(seen, ["https://s.test/1", "https://s.test/2"])

    def test_area_tag_and_other_attributes_kept(self) -> None:
        out, _ = self.track('<area shape="rect" coords="0,0,1,1" href="http://s.test/m" alt="m">')
        self.assertEqual(out, '<area shape="rect" coords="0,0,1,1" href="https://t.test/c/0" alt="m">')

    def test_repeated_destination_same_replacement(self) -> None:
        out, seen = self.track('<a href="https://s.test/">1</a><a href="https://s.test/">2</a>')
        self.assertEqual(out.count("https://t.test/c/0"), 2)
        self.assertEqual(seen, ["https://s.test/"])

    def test_skipped_links(self) -> None:
        """mailto:, tel:, fragments, data:, javascript:, relative links, data-notrack and class
        notrack are never tracked; nor are href look-alikes in other attributes or tags."""
        html = ('<a href="mailto:a@b.test">m</a><a href="tel:+1555">t</a><a href="#top">f</a>'
                '<a href="data:text/plain,x">d</a><a href="javascript:alert(1)">j</a>'
                '<a href="/relative/page">r</a><a href="page.html">r2</a>'
                '<a data-notrack href="https://s.test/1">n1</a>'
                '<a class="button notrack" href="https://s.test/2">n2</a>'
                '<a title="href=https://s.test/3" name="x">n3</a><link href="https://s.test/4">'
                '<abbr title="https://s.test/5">n5</abbr><img src="https://s.test/6">')
        out, seen = self.track(html)
        self.assertEqual((out, seen), (html, []))

    def test_class_notrack_is_a_whole_token(self) -> None:
        out, seen = self.track('<a class="notracking" href="https://s.test/">x</a>')
        self.assertEqual(seen, ["https://s.test/"])

    def test_track_may_decline(self) -> None:
        html = '<a href="https://s.test/u.z?k=1">unsubscribe</a>'
        self.assertEqual(track_html_links(html, lambda destination: None), html)

    def test_whitespace_around_destination_ignored(self) -> None:
        _, seen = self.track('<a href=" https://s.test/x\n">x</a>')
        self.assertEqual(seen, ["https://s.test/x"])


class TextLinkTests(SynchronousTestCase):
    def test_bare_urls_replaced_without_trailing_punctuation(self) -> None:
        seen, track = _numbered()
        out = track_text_links("Go to https://s.test/a. Or (https://s.test/b_(c)), <https://s.test/d>!",
                               track)
        self.assertEqual(out, "Go to https://t.test/c/0. Or (https://t.test/c/1), <https://t.test/c/2>!")
        self.assertEqual(seen, ["https://s.test/a", "https://s.test/b_(c)", "https://s.test/d"])

    def test_other_schemes_ignored(self) -> None:
        text = "mail mailto:a@b.test or ftp://f.test/x"
        self.assertEqual(track_text_links(text, lambda destination: "X"), text)


class PixelAndIdTests(SynchronousTestCase):
    def test_pixel_before_the_last_body_end_tag(self) -> None:
        html = "<body>a</body><!-- </body> quoted --></BODY >\n</html>"
        out = insert_pixel(html, "https://t.test/o?a=1&b=2")
        self.assertEqual(out, "<body>a</body><!-- </body> quoted -->"
                              '<img src="https://t.test/o?a=1&amp;b=2" width="1" height="1" alt="" '
                              'style="display:none"></BODY >\n</html>')

    def test_pixel_at_the_end_without_body(self) -> None:
        self.assertEqual(insert_pixel("<p>x</p>", "https://t.test/o"), "<p>x</p>" + pixel_tag("https://t.test/o"))

    def test_unique_id(self) -> None:
        self.assertEqual(replace_unique_id(f"a {UNIQUE_ID_TOKEN} b{UNIQUE_ID_TOKEN}", "42"), "a 42 b42")
