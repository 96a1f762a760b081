//! Typed errors of the screening crate.

/// A model config that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: std::io::Error },
    /// Not TOML, or a key or value of the wrong kind.
    #[error("model config: {0}")]
    Toml(String),
    /// Parsed, but a value is out of range or contradicts another.
    #[error("model config: {0}")]
    Invalid(String),
}

/// A model that cannot be loaded with its config.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// tract could not read, type or optimise the ONNX file.
    #[error("cannot load the ONNX model {path}: {message}")]
    Load { path: String, message: String },
    /// The model's output does not have the shape the config describes.
    #[error("the model does not fit its config: {0}")]
    Mismatch(String),
}

/// One sample that could not be screened (counted, logged, never fatal).
#[derive(Debug, thiserror::Error)]
pub enum SampleError {
    /// The snapshot is not a WebP image we can decode.
    #[error("snapshot decode: {0}")]
    Decode(String),
    /// Inference failed on this input.
    #[error("inference: {0}")]
    Inference(String),
    /// The output has an unexpected shape (e.g. a dynamic model changed it).
    #[error("model output: {0}")]
    Output(String),
}

impl SampleError {
    /// Bounded metric label.
    pub fn kind(&self) -> &'static str {
        match self {
            SampleError::Decode(_) => "decode",
            SampleError::Inference(_) => "inference",
            SampleError::Output(_) => "output",
        }
    }
}
