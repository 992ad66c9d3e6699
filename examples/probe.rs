use bollard_buildkit_proto::moby::buildkit::v1::{control_client::ControlClient, BuildHistoryRequest};
use buildkit_exporter::source::{
    dial,
    spec::{DockerTls, Link, SourceSpec},
};
use std::time::Duration;
#[tokio::main]
async fn main() {
    let url = std::env::args().nth(1).unwrap();
    let spec = SourceSpec::parse(&url, true, &DockerTls::default()).unwrap();
    let link =
        Link { keepalive: Duration::from_secs(10), timeout: Duration::from_secs(5), retry_max: Duration::from_secs(5) };
    let (ch, _) = dial::connect(&spec.endpoint, link).await.unwrap();
    let c2 = ch.clone();
    let mut c = ControlClient::new(ch);
    let mut s = c
        .listen_build_history(BuildHistoryRequest { active_only: false, ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    while let Ok(Some(ev)) =
        tokio::time::timeout(Duration::from_secs(2), s.message()).await.unwrap_or(Ok(None)).map(|x| x)
    {
        let Some(r) = ev.record else { continue };
        if std::env::var("ATTRS").is_ok() {
            println!("ATTRS {} {:?}", r.r#ref, r.frontend_attrs);
            continue;
        }
        if let Some(e) = &r.error {
            println!("REF {} code {} msg {:?} ext {:?}", r.r#ref, e.code, e.message, r.external_error);
            for d in &e.details {
                println!("  {} {}", d.type_url, String::from_utf8_lossy(&d.value));
            }
            if let Some(x) = &r.external_error {
                let blob =
                    buildkit_exporter::source::content::read(c2.clone(), &x.digest, x.size, Duration::from_secs(5))
                        .await
                        .unwrap();
                use prost::Message;
                let st = bollard_buildkit_proto::google::rpc::Status::decode(&blob[..]).unwrap();
                for d in &st.details {
                    if !d.type_url.contains("Stack") {
                        println!("  EXT {} {:?}", d.type_url, String::from_utf8_lossy(&d.value));
                    }
                }
            }
        }
    }
}
#[allow(dead_code)]
async fn _x() {}
