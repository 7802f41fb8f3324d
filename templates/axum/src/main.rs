//! An axum web service on tokio's `current_thread` runtime, as it would
//! run on Linux but for the listener: `denali_tokio::TcpListener` stands in
//! for `tokio::net::TcpListener` (tokio's `net` does not build for the
//! platform yet), and hyper serves each connection.
use axum::Router;
use axum::routing::get;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;

async fn hello() -> &'static str {
    "Hello, World!"
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::io::Result<()> {
    let app = Router::new().route("/", get(hello));
    let listener = denali_tokio::TcpListener::bind("0.0.0.0:80").await?;
    println!("{{name}}: listening on {}", listener.local_addr()?);
    loop {
        let (stream, _peer) = listener.accept().await?;
        let service = TowerToHyperService::new(app.clone());
        tokio::spawn(async move {
            if let Err(e) = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await {
                eprintln!("{{name}}: connection failed: {e}");
            }
        });
    }
}
