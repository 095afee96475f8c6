//! The API as other clients see it, in one test binary: the official OpenAI SDKs
//! (`openai`), replies against the OpenAPI document and schemathesis (`openapi`), and a
//! corpus of hostile requests sent byte for byte (`hostile`).

#[path = "../util/mod.rs"]
mod util;

mod hostile;
mod openai;
mod openapi;
