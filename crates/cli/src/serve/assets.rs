//! The dashboard's one stylesheet, served by the binary itself (nothing is fetched from
//! elsewhere, so the dashboard works offline and behind strict proxies).

use axum::http::header;
use axum::response::{IntoResponse, Response};

pub(crate) const STYLE: &str = r#"
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1d2330;background:#f5f6f8}
header{background:#1d2330;color:#fff;padding:.7rem 1.5rem;display:flex;justify-content:space-between;align-items:center}
header a{color:#fff;text-decoration:none;font-weight:600}
main{padding:1.2rem 1.5rem;max-width:1300px}
h1{font-size:1.4rem;margin:.2rem 0 1rem}h2{font-size:1.1rem;margin:1.6rem 0 .6rem}
table{border-collapse:collapse;width:100%;background:#fff;box-shadow:0 1px 2px #0001}
th,td{text-align:left;padding:.45rem .6rem;border-bottom:1px solid #e4e7ec;vertical-align:top}
th{background:#eef0f4;font-weight:600;font-size:.85rem;text-transform:uppercase;letter-spacing:.03em}
.bar{background:#e4e7ec;border-radius:4px;height:.7rem;min-width:8rem;overflow:hidden}
.bar>span{display:block;height:100%;background:#2f7d4f}
.state{display:inline-block;padding:.05rem .5rem;border-radius:1rem;font-size:.8rem;background:#e4e7ec}
.state.running,.state.synced,.state.ok,.state.done{background:#d5f0df;color:#1c5a35}
.state.failed,.state.error,.state.FAIL{background:#fbdcdc;color:#8a1f1f}
.state.paused,.state.warning,.state.scheduled,.state.syncing{background:#fff0c7;color:#6b4e00}
.err{color:#8a1f1f;font-size:.88rem}.muted{color:#596170;font-size:.88rem}
form.inline{display:inline}button{font:inherit;padding:.35rem .8rem;border-radius:4px;border:1px solid #1d2330;background:#1d2330;color:#fff;cursor:pointer}
button.secondary{background:#fff;color:#1d2330}button:disabled{opacity:.4;cursor:not-allowed}
fieldset{background:#fff;border:1px solid #e4e7ec;padding:1rem;display:grid;grid-template-columns:repeat(auto-fill,minmax(14rem,1fr));gap:.6rem}
label{display:flex;flex-direction:column;font-size:.85rem;gap:.2rem}input{font:inherit;padding:.3rem}
.totals{display:flex;gap:1.5rem;flex-wrap:wrap;margin:.6rem 0}.totals div{background:#fff;padding:.6rem 1rem;box-shadow:0 1px 2px #0001}
.state.blocked,.state.overdue{background:#fbdcdc;color:#8a1f1f;font-weight:600}.state.current{background:#fff0c7;color:#6b4e00}
code{font:.85em ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;background:#eef0f4;color:#1d2330;padding:.05rem .25rem;border-radius:3px}
#timeline tr.overdue td{background:#fff5f5}#timeline tr.overdue td:first-child{border-left:4px solid #8a1f1f}
#timeline tr.today td{background:#eef6ff;border-top:2px solid #1d4ed8;border-bottom:2px solid #1d4ed8;font-weight:600}
.totals b{display:block;font-size:1.3rem}.flash{background:#eef6ff;border:1px solid #b6d4fe;padding:.6rem 1rem;margin-bottom:1rem}
"#;

pub(crate) async fn style() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=3600"),
        ],
        STYLE,
    )
        .into_response()
}
