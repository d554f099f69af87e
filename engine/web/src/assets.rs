//! Static assets, vendored into the binary and served under content-hashed
//! names (`/static/app.3f2a9c1b.css`) with a year-long cache lifetime: a new
//! build changes the name, never the content behind a name.

use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sha2::Digest;
use std::sync::LazyLock;

pub struct Asset {
    /// The name in the source tree (`app.css`).
    pub name: &'static str,
    /// The hashed name it is served under.
    pub hashed: String,
    pub content_type: &'static str,
    pub body: String,
}

static SOURCES: &[(&str, &str, &str)] = &[
    ("cond.js", "text/javascript; charset=utf-8", include_str!("../assets/cond.js")),
    ("htmx.min.js", "text/javascript; charset=utf-8", include_str!("../assets/htmx.min.js")),
    ("app.css", "text/css; charset=utf-8", include_str!("../assets/app.css")),
    // Last: it imports the modules above by their hashed names.
    ("app.js", "text/javascript; charset=utf-8", include_str!("../assets/app.js")),
];

static ASSETS: LazyLock<Vec<Asset>> = LazyLock::new(|| {
    let mut out: Vec<Asset> = Vec::new();
    for (name, content_type, text) in SOURCES {
        let mut body = text.to_string();
        for earlier in &out {
            body = body.replace(&format!("./{}", earlier.name), &format!("/static/{}", earlier.hashed));
        }
        let digest = hex::encode(sha2::Sha256::digest(body.as_bytes()));
        let (stem, ext) = name.rsplit_once('.').unwrap_or((name, ""));
        out.push(Asset { name, hashed: format!("{stem}.{}.{ext}", &digest[..10]), content_type, body });
    }
    out
});

/// The URL of a vendored file by its source name (`app.css`).
pub fn url(name: &str) -> String {
    ASSETS.iter().find(|a| a.name == name).map_or_else(|| format!("/static/{name}"), |a| format!("/static/{}", a.hashed))
}

/// Every vendored file, for size checks.
pub fn all() -> &'static [Asset] {
    &ASSETS
}

pub async fn serve(Path(file): Path<String>) -> Response {
    let Some(found) = ASSETS.iter().find(|a| a.hashed == file || a.name == file) else {
        return (StatusCode::NOT_FOUND, "no such file").into_response();
    };
    let cache = if found.hashed == file { "public, max-age=31536000, immutable" } else { "public, max-age=300" };
    let mut r = found.body.clone().into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(found.content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    h.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    r
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    /// A form page ships every script and style there is: under 100 KB
    /// compressed, for a phone on a slow network (gzip here; brotli is smaller).
    #[test]
    fn scripts_and_styles_are_light() {
        let mut total = 0;
        for asset in super::all() {
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            gz.write_all(asset.body.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
            let size = gz.finish().unwrap_or_else(|e| panic!("{e}")).len();
            println!("{}: {} bytes, {size} gzipped", asset.name, asset.body.len());
            total += size;
        }
        assert!(total < 100 * 1024, "{total} bytes of JS and CSS gzipped");
    }

    #[test]
    fn modules_import_each_other_by_hashed_name() {
        let app = super::all().iter().find(|a| a.name == "app.js").map(|a| a.body.clone()).unwrap_or_default();
        assert!(app.contains(&super::url("cond.js")) && !app.contains("\"./cond.js\""), "{}", &app[..200]);
    }
}
