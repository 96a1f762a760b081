//! The operator's ONNX model on tract (pure Rust; its matrix kernels are
//! compiled from source, nothing is downloaded at build time). Loaded once
//! with the input shape fixed from the config, optimised, checked with one
//! inference at start-up, then shared by the worker threads: a run takes
//! `&self` and keeps its state on the calling thread's stack.

use crate::config::{Layout, ModelConfig};
use crate::error::{ModelError, SampleError};
use crate::image::{decode_webp, to_input, Rgb};
use crate::mapping::{categorise, label_scores};
use proto::screen_api::CategoryScore;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tract_onnx::prelude::*;

type Plan = TypedSimplePlan<TypedModel>;

/// A loaded model with its config.
#[derive(Clone)]
pub struct Model {
    config: Arc<ModelConfig>,
    plan: Arc<Plan>,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("id", &self.config.id)
            .finish_non_exhaustive()
    }
}

/// What screening one snapshot gave.
#[derive(Clone, Debug, PartialEq)]
pub struct Screened {
    pub scores: Vec<CategoryScore>,
    /// Score of every label of the model, in config order.
    pub labels: Vec<f32>,
    /// Decoding and resizing.
    pub prepare: Duration,
    /// The model run and the output mapping.
    pub infer: Duration,
}

impl Model {
    /// Loads `path` for `config` and runs it once on a grey picture to prove
    /// that its output fits the config.
    pub fn load(path: &Path, config: ModelConfig) -> Result<Self, ModelError> {
        let plan = Self::plan(path, &config).map_err(|e| ModelError::Load {
            path: path.display().to_string(),
            message: format!("{e:#}"),
        })?;
        let model = Self {
            config: Arc::new(config),
            plan: Arc::new(plan),
        };
        let grey = Rgb::solid(64, 48, [128, 128, 128]);
        model
            .run(&to_input(&grey, &model.config.input))
            .map_err(|e| ModelError::Mismatch(e.to_string()))?;
        Ok(model)
    }

    fn plan(path: &Path, c: &ModelConfig) -> TractResult<Plan> {
        let (w, h) = (c.input.width as usize, c.input.height as usize);
        let shape = match c.input.layout {
            Layout::Nchw => [1, 3, h, w],
            Layout::Nhwc => [1, h, w, 3],
        };
        let onnx = tract_onnx::onnx();
        let mut proto = onnx.proto_model_for_path(path)?;
        // The shapes an exporter recorded for intermediate values are hints,
        // and they may be symbolic where the input fact below fixes them
        // (NudeNet's Ultralytics export says `batch`, `height`, `width`, which
        // tract then cannot unify with 1, 320, 320): drop them, tract infers
        // every shape from the input.
        if let Some(graph) = proto.graph.as_mut() {
            graph.value_info.clear();
        }
        let dir = path.parent().and_then(|d| d.to_str());
        let parsed = onnx.parse(&proto, dir)?;
        if !parsed.unresolved_inputs.is_empty() {
            return Err(TractError::msg(format!(
                "unresolved inputs: {:?}",
                parsed.unresolved_inputs
            )));
        }
        parsed
            .model
            .with_input_fact(0, f32::fact(shape).into())?
            .into_optimized()?
            .into_runnable()
    }

    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// The id operators gave the model (reports and the audit log carry it).
    pub fn id(&self) -> &str {
        &self.config.id
    }

    /// Label scores for an input already in the model's layout.
    pub fn run(&self, input: &[f32]) -> Result<Vec<f32>, SampleError> {
        let c = &self.config.input;
        let (w, h) = (c.width as usize, c.height as usize);
        let shape = match c.layout {
            Layout::Nchw => [1, 3, h, w],
            Layout::Nhwc => [1, h, w, 3],
        };
        let inference = |e: TractError| SampleError::Inference(format!("{e:#}"));
        let tensor = Tensor::from_shape(&shape, input).map_err(inference)?;
        let outputs = self.plan.run(tvec!(tensor.into_tvalue())).map_err(inference)?;
        let index = self.config.output.index;
        let out = outputs
            .get(index)
            .ok_or_else(|| SampleError::Output(format!("the model has no output #{index}")))?;
        let values = out
            .as_slice::<f32>()
            .map_err(|e| SampleError::Output(format!("output #{index} is not f32: {e}")))?;
        label_scores(&self.config, out.shape(), values)
    }

    /// Screens one snapshot (a WebP file). Blocking and CPU-bound: call it
    /// from a worker thread, never from an async task.
    pub fn screen(&self, webp: &[u8]) -> Result<Screened, SampleError> {
        let start = Instant::now();
        let picture = decode_webp(webp)?;
        let input = to_input(&picture, &self.config.input);
        let prepared = Instant::now();
        let labels = self.run(&input)?;
        let scores = categorise(&self.config, &labels);
        Ok(Screened {
            scores,
            labels,
            prepare: prepared - start,
            infer: prepared.elapsed(),
        })
    }
}
