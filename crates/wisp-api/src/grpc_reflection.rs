//! The messages of gRPC server reflection (`grpc.reflection.v1alpha` and `grpc.reflection.v1`, which
//! share field numbers), written out with `prost`'s derive so no `.proto` is compiled at build time,
//! and the answers to them from the `.proto` files of the account's gRPC-bound functions.
//!
//! Only the requests tools need are answered: `list_services`, `file_by_filename`,
//! `file_containing_symbol`; extension requests get a NOT_FOUND error response.

use std::collections::HashSet;

use prost::Message as _;
use prost_reflect::{DescriptorPool, FileDescriptor};

#[derive(Clone, PartialEq, prost::Message)]
pub struct ServerReflectionRequest {
    #[prost(string, tag = "1")]
    pub host: String,
    #[prost(oneof = "MessageRequest", tags = "3, 4, 5, 6, 7")]
    pub message_request: Option<MessageRequest>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
pub enum MessageRequest {
    #[prost(string, tag = "3")]
    FileByFilename(String),
    #[prost(string, tag = "4")]
    FileContainingSymbol(String),
    #[prost(message, tag = "5")]
    FileContainingExtension(ExtensionRequest),
    #[prost(string, tag = "6")]
    AllExtensionNumbersOfType(String),
    #[prost(string, tag = "7")]
    ListServices(String),
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ExtensionRequest {
    #[prost(string, tag = "1")]
    pub containing_type: String,
    #[prost(int32, tag = "2")]
    pub extension_number: i32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ServerReflectionResponse {
    #[prost(string, tag = "1")]
    pub valid_host: String,
    #[prost(message, optional, tag = "2")]
    pub original_request: Option<ServerReflectionRequest>,
    #[prost(oneof = "MessageResponse", tags = "4, 6, 7")]
    pub message_response: Option<MessageResponse>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
pub enum MessageResponse {
    #[prost(message, tag = "4")]
    FileDescriptor(FileDescriptorResponse),
    #[prost(message, tag = "6")]
    ListServices(ListServiceResponse),
    #[prost(message, tag = "7")]
    Error(ErrorResponse),
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct FileDescriptorResponse {
    #[prost(bytes = "vec", repeated, tag = "1")]
    pub file_descriptor_proto: Vec<Vec<u8>>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ListServiceResponse {
    #[prost(message, repeated, tag = "1")]
    pub service: Vec<ServiceResponse>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ServiceResponse {
    #[prost(string, tag = "1")]
    pub name: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ErrorResponse {
    #[prost(int32, tag = "1")]
    pub error_code: i32,
    #[prost(string, tag = "2")]
    pub error_message: String,
}

/// What reflection shows: the services with at least one bound method, and the pools that declare them.
pub struct Catalog {
    pub services: Vec<String>,
    pub pools: Vec<DescriptorPool>,
}

impl Catalog {
    /// The answer to one request.
    pub fn answer(&self, request: ServerReflectionRequest) -> ServerReflectionResponse {
        let message_response = match &request.message_request {
            Some(MessageRequest::ListServices(_)) => {
                MessageResponse::ListServices(ListServiceResponse {
                    service: self
                        .services
                        .iter()
                        .map(|name| ServiceResponse { name: name.clone() })
                        .collect(),
                })
            }
            Some(MessageRequest::FileByFilename(name)) => self.files(
                self.pools
                    .iter()
                    .find_map(|pool| pool.get_file_by_name(name)),
                &format!("file {name:?}"),
            ),
            Some(MessageRequest::FileContainingSymbol(symbol)) => self.files(
                self.pools
                    .iter()
                    .find_map(|pool| file_of_symbol(pool, symbol)),
                &format!("symbol {symbol:?}"),
            ),
            Some(MessageRequest::FileContainingExtension(_))
            | Some(MessageRequest::AllExtensionNumbersOfType(_)) => {
                error(12, "extensions are not served by reflection here")
            }
            None => error(3, "the reflection request names no question"),
        };
        ServerReflectionResponse {
            valid_host: request.host.clone(),
            original_request: Some(request),
            message_response: Some(message_response),
        }
    }

    /// A file and everything it imports, the file first.
    fn files(&self, file: Option<FileDescriptor>, what: &str) -> MessageResponse {
        let Some(file) = file else {
            return error(5, &format!("{what} is not served"));
        };
        let mut seen = HashSet::new();
        let mut ordered = Vec::new();
        let mut pending = vec![file];
        while let Some(file) = pending.pop() {
            if !seen.insert(file.name().to_string()) {
                continue;
            }
            pending.extend(file.dependencies());
            ordered.push(file.file_descriptor_proto().encode_to_vec());
        }
        MessageResponse::FileDescriptor(FileDescriptorResponse {
            file_descriptor_proto: ordered,
        })
    }
}

fn error(code: i32, message: &str) -> MessageResponse {
    MessageResponse::Error(ErrorResponse {
        error_code: code,
        error_message: message.to_string(),
    })
}

/// The file that declares a service, method (`pkg.Service.Method`), message or enum.
fn file_of_symbol(pool: &DescriptorPool, symbol: &str) -> Option<FileDescriptor> {
    if let Some(service) = pool.get_service_by_name(symbol) {
        return Some(service.parent_file());
    }
    if let Some(message) = pool.get_message_by_name(symbol) {
        return Some(message.parent_file());
    }
    if let Some(enumeration) = pool.get_enum_by_name(symbol) {
        return Some(enumeration.parent_file());
    }
    let (service, method) = symbol.rsplit_once('.')?;
    let service = pool.get_service_by_name(service)?;
    service
        .methods()
        .any(|candidate| candidate.name() == method)
        .then(|| service.parent_file())
}
