//! Listing a directory of the store: FTP `NLST`, or an HTTP server's index page (nginx
//! `autoindex`, Apache, `python3 -m http.server` all link each file by its name).

use super::config::StoreConfig;
use super::url::Scheme;
use super::{ftp, http, with_retries, Error, Options};

/// Largest index page read.
const MAX_INDEX_BYTES: u64 = 4 << 20;

/// The names of the files in `dir` (relative to the store's directory), sorted.
pub fn list(config: &StoreConfig, dir: &str, options: &Options) -> Result<Vec<String>, Error> {
    let source = config.at(dir)?;
    let url = &source.url;
    let mut names = with_retries("listing", url, options, || match url.scheme {
        Scheme::Ftp => ftp::list(&source, options),
        Scheme::Http => {
            http::index_page(&source, options, MAX_INDEX_BYTES).map(|page| index_links(&page))
        }
    })?;
    names.sort();
    names.dedup();
    Ok(names)
}

/// The plain file names an index page links to: `href="NAME"` with no `/`, `?` or `#`
/// (which skips parent and sub-directories, sort links and absolute links). Pure.
pub fn index_links(page: &str) -> Vec<String> {
    page.split("href=\"")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .filter(|href| !href.is_empty() && !href.contains(['/', '?', '#', ':']))
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_index_pages() {
        let nginx = r#"<html><body><h1>Index of /fleet/status/</h1><hr><pre>
<a href="../">../</a>
<a href="SN1.toml">SN1.toml</a>       25-Nov-2026 14:00   120
<a href="SN2.toml">SN2.toml</a>       25-Nov-2026 14:00   120
<a href="old/">old/</a>
<a href="?C=M;O=A">Last modified</a>
<a href="http://elsewhere/x">x</a>
</pre></body></html>"#;
        assert_eq!(index_links(nginx), ["SN1.toml", "SN2.toml"]);
        assert!(index_links("no links").is_empty());
    }
}
