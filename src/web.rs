//! What a browser loads from a node: the JavaScript client at a versioned
//! path (`/client/v1/`, protocol v1), and the demo chat at `/`. The files
//! live in `web/` and are compiled into the binary, so every node of a
//! cluster serves the same client and nothing is read from disk.

use actix_web::http::header;
use actix_web::{web, HttpResponse};

struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static str,
}

/// The client and its TypeScript declarations, at a path that changes only
/// with the protocol's version.
static CLIENT: [Asset; 2] = [
    Asset {
        path: "/client/v1/switchboard.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("../web/client/switchboard.js"),
    },
    Asset {
        path: "/client/v1/switchboard.d.ts",
        content_type: "application/typescript; charset=utf-8",
        body: include_str!("../web/client/switchboard.d.ts"),
    },
];

/// The demo page and its own files.
static DEMO: [Asset; 3] = [
    Asset {
        path: "/",
        content_type: "text/html; charset=utf-8",
        body: include_str!("../web/demo/index.html"),
    },
    Asset {
        path: "/demo/demo.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("../web/demo/demo.js"),
    },
    Asset {
        path: "/demo/demo.css",
        content_type: "text/css; charset=utf-8",
        body: include_str!("../web/demo/demo.css"),
    },
];

/// The client everywhere; the demo if `demo` (else `http` answers `/`).
pub fn routes(cfg: &mut web::ServiceConfig, demo: bool) {
    let demo: &[Asset] = if demo { &DEMO } else { &[] };
    for asset in CLIENT.iter().chain(demo) {
        cfg.route(asset.path, web::get().to(move || serve(asset)));
    }
}

async fn serve(asset: &'static Asset) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(asset.content_type)
        // A page on another origin imports the client as an ES module,
        // which browsers fetch in CORS mode.
        .insert_header((header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"))
        // The files change with the build, not with the path: revalidate.
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .body(asset.body)
}
