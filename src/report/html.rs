//! Self-contained HTML pages: one file that opens from `file://` with no network, no CDN and
//! no script — styles inline, plots as inline SVG, pictures as `data:` URIs.
//!
//! Every page carries a Content-Security-Policy that forbids loading anything from anywhere
//! (`default-src 'none'`, images only from `data:`, styles only inline), so not even a crafted
//! class name or file name in a table could make the page fetch something. Links to the run's
//! files are plain relative `<a href>`s, which are navigation and not loads.
//!
//! Written by hand: the pages are a handful of headings, tables and figures, and a template
//! engine would add a dependency and a second language for what `escape` and `format!` do.
//! Markdown that vilab already writes (comparison and sweep tables) goes through
//! `pulldown-cmark`.

use std::fmt::Write as _;

use base64::Engine as _;

/// The style sheet of every page: readable on a laptop, tables that scroll sideways on a
/// narrow screen, and a print layout without the navigation and with every section open.
const STYLE: &str = "
:root { --fg: #1b1f24; --muted: #59636e; --line: #d1d9e0; --bg-alt: #f6f8fa; --accent: #0969da;
  --good: #1a7f37; --bad: #cf222e; }
* { box-sizing: border-box; }
body { margin: 0 auto; max-width: 1180px; padding: 1.5rem 1.25rem 3rem; color: var(--fg);
  font: 15px/1.5 system-ui, -apple-system, 'Segoe UI', Roboto, 'Helvetica Neue', Arial, sans-serif; }
h1 { font-size: 1.6rem; margin: 0 0 .25rem; }
h2 { font-size: 1.25rem; margin: 2rem 0 .6rem; padding-bottom: .25rem; border-bottom: 1px solid var(--line); }
h3 { font-size: 1.05rem; margin: 1.2rem 0 .4rem; }
a { color: var(--accent); text-decoration: none; }
a:hover { text-decoration: underline; }
code, pre, .mono { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: .9em; }
pre { background: var(--bg-alt); padding: .75rem 1rem; overflow-x: auto; border-radius: 6px; }
.subtitle { color: var(--muted); margin: 0 0 1rem; }
nav { margin: .5rem 0 1rem; display: flex; flex-wrap: wrap; gap: .25rem 1rem; font-size: .95rem; }
.badges { display: flex; flex-wrap: wrap; gap: .5rem; margin: .75rem 0; }
.badge { border: 1px solid var(--line); border-radius: 6px; padding: .35rem .7rem; background: var(--bg-alt); }
.badge b { display: block; font-size: 1.2rem; }
.state-done { color: var(--good); } .state-failed { color: var(--bad); }
.state-running { color: var(--accent); } .state-interrupted { color: #9a6700; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; margin: .5rem 0 1rem; font-size: .92rem; }
th, td { border: 1px solid var(--line); padding: .3rem .6rem; text-align: left; vertical-align: top; }
th { background: var(--bg-alt); font-weight: 600; }
td { white-space: nowrap; }
td.long { white-space: normal; min-width: 18rem; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr:nth-child(even) td { background: #fbfcfd; }
figure { margin: .75rem 0; }
figure svg, figure img { max-width: 100%; height: auto; image-rendering: auto; border: 1px solid var(--line); border-radius: 4px; }
figcaption { color: var(--muted); font-size: .9rem; }
.figures { display: grid; grid-template-columns: repeat(auto-fit, minmax(460px, 1fr)); gap: 1rem; }
details { margin: .5rem 0; }
summary { cursor: pointer; color: var(--accent); }
.note { color: var(--muted); }
.error { color: var(--bad); }
footer { margin-top: 3rem; color: var(--muted); font-size: .85rem; }
@media print {
  body { max-width: none; padding: 0; font-size: 11pt; }
  nav, summary { display: none; }
  details > * { display: block !important; }
  h2 { break-after: avoid; }
  figure, table { break-inside: avoid; }
  a { color: inherit; }
}
";

/// A page being written.
#[derive(Debug, Clone)]
pub struct Page {
    title: String,
    refresh_seconds: Option<u32>,
    body: String,
}

impl Page {
    /// An empty page titled `title` (shown as its `<h1>` too).
    pub fn new(title: &str) -> Self {
        Self {
            title: title.to_owned(),
            refresh_seconds: None,
            body: String::new(),
        }
    }

    /// Makes the browser reload the page every `seconds` (for a page of work in progress).
    pub fn refresh_every(&mut self, seconds: u32) {
        self.refresh_seconds = Some(seconds);
    }

    /// Appends HTML as it is (already escaped by the caller).
    pub fn raw(&mut self, html: &str) {
        self.body.push_str(html);
        self.body.push('\n');
    }

    /// A section heading with an anchor id.
    pub fn section(&mut self, id: &str, title: &str) {
        let _ = writeln!(
            self.body,
            "<h2 id=\"{}\">{}</h2>",
            escape(id),
            escape(title)
        );
    }

    /// A smaller heading.
    pub fn subsection(&mut self, title: &str) {
        let _ = writeln!(self.body, "<h3>{}</h3>", escape(title));
    }

    /// A paragraph of plain text.
    pub fn paragraph(&mut self, text: &str) {
        let _ = writeln!(self.body, "<p>{}</p>", escape(text));
    }

    /// A muted note.
    pub fn note(&mut self, text: &str) {
        let _ = writeln!(self.body, "<p class=\"note\">{}</p>", escape(text));
    }

    /// A table of plain-text cells; cells that read as numbers are right-aligned.
    pub fn table(&mut self, header: &[String], rows: &[Vec<String>]) {
        let rows: Vec<Vec<Cell>> = rows
            .iter()
            .map(|row| row.iter().map(|text| Cell::text(text)).collect())
            .collect();
        self.cells(header, &rows);
    }

    /// A table of prepared cells.
    pub fn cells(&mut self, header: &[String], rows: &[Vec<Cell>]) {
        let mut html = String::from("<div class=\"scroll\"><table>\n<thead><tr>");
        for cell in header {
            let _ = write!(html, "<th>{}</th>", escape(cell));
        }
        html.push_str("</tr></thead>\n<tbody>\n");
        for row in rows {
            html.push_str("<tr>");
            for cell in row {
                let class = match (cell.numeric, cell.long) {
                    (true, _) => " class=\"num\"",
                    (false, true) => " class=\"long\"",
                    (false, false) => "",
                };
                let _ = write!(html, "<td{class}>{}</td>", cell.html);
            }
            html.push_str("</tr>\n");
        }
        html.push_str("</tbody></table></div>");
        self.raw(&html);
    }

    /// An inline SVG figure with a caption.
    pub fn svg_figure(&mut self, svg: &str, caption: &str) {
        let _ = writeln!(
            self.body,
            "<figure>{}<figcaption>{}</figcaption></figure>",
            inline_svg(svg),
            escape(caption)
        );
    }

    /// A PNG figure (inlined as a `data:` URI) with a caption.
    pub fn png_figure(&mut self, png: &[u8], caption: &str) {
        let _ = writeln!(
            self.body,
            "<figure><img src=\"{}\" alt=\"{}\"><figcaption>{}</figcaption></figure>",
            png_data_uri(png),
            escape(caption),
            escape(caption)
        );
    }

    /// The body written so far, to place inside another page.
    pub fn body(self) -> String {
        self.body
    }

    /// The whole document.
    pub fn finish(self, subtitle: &str, navigation: &[(&str, &str)]) -> String {
        let refresh = self
            .refresh_seconds
            .map(|seconds| format!("<meta http-equiv=\"refresh\" content=\"{seconds}\">\n"))
            .unwrap_or_default();
        let nav: String = navigation
            .iter()
            .map(|(id, label)| format!("<a href=\"#{}\">{}</a>", escape(id), escape(label)))
            .collect();
        format!(
            "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
             <meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; \
             img-src data:; style-src 'unsafe-inline'\">\n{refresh}\
             <title>{title}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n\
             <h1>{title}</h1>\n<p class=\"subtitle\">{subtitle}</p>\n<nav>{nav}</nav>\n\
             {body}<footer>Written by vilab {version}.</footer>\n</body>\n</html>\n",
            title = escape(&self.title),
            subtitle = escape(subtitle),
            body = self.body,
            version = env!("CARGO_PKG_VERSION"),
        )
    }
}

/// One table cell.
#[derive(Debug, Clone, PartialEq)]
pub struct Cell {
    /// Its HTML.
    pub html: String,
    /// Right-aligned.
    pub numeric: bool,
    /// Long text that may wrap (other cells keep to one line).
    pub long: bool,
}

impl Cell {
    /// Plain text, right-aligned when it reads as a number (`12.5`, `-0.3`, `+1.20 (±0.00)`).
    pub fn text(text: &str) -> Self {
        Self {
            html: escape(text),
            numeric: looks_numeric(text),
            long: text.chars().count() > LONG_CELL,
        }
    }

    /// A link to `href` showing `text`.
    pub fn link(text: &str, href: &str) -> Self {
        Self {
            html: link(text, href),
            numeric: false,
            long: false,
        }
    }

    /// HTML as it is.
    pub fn html(html: String) -> Self {
        Self {
            html,
            numeric: false,
            long: false,
        }
    }
}

/// Characters beyond which a cell's text may wrap.
const LONG_CELL: usize = 48;

fn looks_numeric(text: &str) -> bool {
    let first = text.split_whitespace().next().unwrap_or_default();
    !first.is_empty()
        && first
            .trim_start_matches(['+', '-', '±'])
            .parse::<f64>()
            .is_ok()
        && !text.contains(char::is_alphabetic)
}

/// `<a href>` to a relative path, each path segment percent-encoded where needed.
pub fn link(text: &str, href: &str) -> String {
    format!(
        "<a href=\"{}\">{}</a>",
        escape(&encode_href(href)),
        escape(text)
    )
}

/// Escapes what HTML gives meaning to in text and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            other => out.push(other),
        }
    }
    out
}

/// A relative path as a URL path: characters outside the unreserved set and `/` are
/// percent-encoded, so a file named `a b#1.png` links to itself.
pub fn encode_href(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for byte in path.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                out.push(byte as char);
            }
            other => {
                let _ = write!(out, "%{other:02X}");
            }
        }
    }
    out
}

/// Markdown (with tables) as HTML; raw HTML in the input is escaped, not passed through.
pub fn markdown(text: &str) -> String {
    use pulldown_cmark::{Event, Options, Parser};
    let events = Parser::new_ext(text, Options::ENABLE_TABLES).map(|event| match event {
        Event::Html(html) | Event::InlineHtml(html) => Event::Text(html),
        other => other,
    });
    let mut html = String::new();
    pulldown_cmark::html::push_html(&mut html, events);
    html
}

/// A PNG as a `data:` URI.
pub fn png_data_uri(png: &[u8]) -> String {
    format!(
        "data:image/png;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(png)
    )
}

/// An SVG document as an element to place in a page: without its XML declaration, scaled to
/// the width it is given.
pub fn inline_svg(svg: &str) -> String {
    let body = match svg.find("<svg") {
        Some(start) => &svg[start..],
        None => svg,
    };
    body.trim_end().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped_and_paths_are_encoded() {
        assert_eq!(
            escape("<b>\"A&B\"</b> it's"),
            "&lt;b&gt;&quot;A&amp;B&quot;&lt;/b&gt; it&#39;s"
        );
        assert_eq!(encode_href("train/a b#1.png"), "train/a%20b%231.png");
        assert_eq!(
            link("<x>", "a&b.csv"),
            "<a href=\"a%26b.csv\">&lt;x&gt;</a>"
        );
    }

    #[test]
    fn numbers_are_right_aligned_and_words_are_not() {
        assert!(Cell::text("12.5").numeric);
        assert!(Cell::text("+1.20 (±0.00)").numeric);
        assert!(Cell::text("-3").numeric);
        assert!(!Cell::text("1e-3 lr").numeric);
        assert!(!Cell::text("done").numeric);
        assert!(!Cell::text("").numeric);
    }

    #[test]
    fn markdown_tables_render_and_raw_html_is_escaped() {
        let html = markdown("| a | b |\n|---|---|\n| 1 | <script>x</script> |\n");
        assert!(html.contains("<table>"), "{html}");
        assert!(html.contains("&lt;script&gt;"), "{html}");
        assert!(!html.contains("<script>"), "{html}");
    }

    #[test]
    fn a_page_forbids_every_load_and_refreshes_only_when_asked() {
        let mut page = Page::new("Run <1>");
        page.table(
            &["metric".to_owned(), "value".to_owned()],
            &[vec!["acc1".to_owned(), "76.7".to_owned()]],
        );
        let still = page.clone().finish("sub", &[("a", "A")]);
        assert!(still.contains("default-src 'none'"));
        assert!(still.contains("<title>Run &lt;1&gt;</title>"));
        assert!(still.contains("<td class=\"num\">76.7</td>"));
        assert!(!still.contains("http-equiv=\"refresh\""));
        page.refresh_every(10);
        assert!(
            page.finish("", &[])
                .contains("<meta http-equiv=\"refresh\" content=\"10\">")
        );
    }
}
