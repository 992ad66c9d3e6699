//! Reading one blob from the content store BuildKit serves beside its Control API (containerd's
//! `Content` service), which is where a standalone buildkitd keeps a failed build's error with
//! its details. Only `Read` is ever called: never `Info` updates, writes or deletes.

use std::time::Duration;

use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;
use tonic_prost::ProstCodec;

/// Largest blob read: a build's error with its stack traces and the Dockerfile is a few KiB; a
/// descriptor claiming more is not read.
pub const MAX_BLOB_BYTES: i64 = 1 << 20;

/// `containerd.services.content.v1.ReadContentRequest`.
#[derive(Clone, PartialEq, prost::Message)]
struct ReadContentRequest {
    #[prost(string, tag = "1")]
    digest: String,
    #[prost(int64, tag = "2")]
    offset: i64,
    #[prost(int64, tag = "3")]
    size: i64,
}

/// `containerd.services.content.v1.ReadContentResponse`.
#[derive(Clone, PartialEq, prost::Message)]
struct ReadContentResponse {
    #[prost(int64, tag = "1")]
    offset: i64,
    #[prost(bytes = "vec", tag = "2")]
    data: Vec<u8>,
}

/// Why a blob could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("the blob is {0} bytes, more than the {MAX_BLOB_BYTES} read")]
    TooLarge(i64),
    #[error("the content store answered: {0}")]
    Status(#[from] tonic::Status),
    #[error("the content store did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the content store sent {got} bytes of {size}")]
    Short { got: usize, size: i64 },
}

/// Reads the whole blob `digest` of `size` bytes over `channel`, within `timeout`.
pub async fn read(channel: Channel, digest: &str, size: i64, timeout: Duration) -> Result<Vec<u8>, ReadError> {
    if !(0..=MAX_BLOB_BYTES).contains(&size) {
        return Err(ReadError::TooLarge(size));
    }
    let request = ReadContentRequest { digest: digest.to_string(), offset: 0, size };
    let reading = async {
        let mut grpc = tonic::client::Grpc::new(channel);
        grpc.ready().await.map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        let path = PathAndQuery::from_static("/containerd.services.content.v1.Content/Read");
        let codec: ProstCodec<ReadContentRequest, ReadContentResponse> = ProstCodec::default();
        let mut stream = grpc.server_streaming(tonic::Request::new(request), path, codec).await?.into_inner();
        // Grown as it comes: the size is the record's word for it, not yet the store's.
        let mut blob = Vec::with_capacity((size as usize).min(64 * 1024));
        while let Some(chunk) = stream.message().await? {
            if blob.len() as i64 + chunk.data.len() as i64 > size {
                return Err(ReadError::Short { got: blob.len() + chunk.data.len(), size });
            }
            blob.extend_from_slice(&chunk.data);
        }
        if blob.len() as i64 != size {
            return Err(ReadError::Short { got: blob.len(), size });
        }
        Ok(blob)
    };
    tokio::time::timeout(timeout, reading).await.map_err(|_| ReadError::Timeout(timeout))?
}
