//! The model config: what the operator's ONNX model takes and gives, and
//! which of its labels count as which category at which thresholds. A small
//! TOML file beside the model (see `screen/models/` and
//! docs/screening.md); unknown keys are refused, and every value is
//! checked when the screener starts.

use crate::error::ConfigError;
use proto::signal::ReportCategory;
use serde::Deserialize;
use std::collections::HashSet;
use std::path::Path;

/// Largest input side accepted (a bigger model is a mistake, not a choice).
pub const MAX_INPUT_SIDE: u32 = 2048;
/// Most labels a model may have.
pub const MAX_LABELS: usize = 4096;

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// Names the model in flags, reports and the audit log (e.g. `nudenet-320n`).
    pub id: String,
    pub input: InputConfig,
    pub output: OutputConfig,
    /// What the operator screens for.
    #[serde(rename = "category")]
    pub categories: Vec<CategoryConfig>,
}

/// Tensor layout of the model's image input.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    /// `[1, 3, height, width]`.
    Nchw,
    /// `[1, height, width, 3]`.
    Nhwc,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChannelOrder {
    Rgb,
    Bgr,
}

/// How a snapshot is brought to the input size.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Resize {
    /// Scaled to exactly the input size (aspect ratio changes).
    Stretch,
    /// Scaled to fit, centred, the rest filled by repeating the edge pixels
    /// (what YOLO-style detectors were trained with).
    Letterbox,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputConfig {
    pub width: u32,
    pub height: u32,
    pub layout: Layout,
    #[serde(default = "rgb")]
    pub channels: ChannelOrder,
    #[serde(default = "stretch")]
    pub resize: Resize,
    /// The value fed is `(pixel / 255 * range - mean) / std` per channel.
    #[serde(default = "one")]
    pub range: f32,
    #[serde(default = "zeros")]
    pub mean: [f32; 3],
    #[serde(default = "ones")]
    pub std: [f32; 3],
}

fn rgb() -> ChannelOrder {
    ChannelOrder::Rgb
}
fn stretch() -> Resize {
    Resize::Stretch
}
fn one() -> f32 {
    1.0
}
fn zeros() -> [f32; 3] {
    [0.0; 3]
}
fn ones() -> [f32; 3] {
    [1.0; 3]
}

/// What the output tensor means.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputKind {
    /// One score per label (`[1, labels]`).
    Classifier,
    /// Candidate boxes with a score per class; a label's score is its best box.
    Detector,
}

/// Turns a classifier's raw outputs into probabilities.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Activation {
    /// The model already outputs probabilities.
    None,
    Softmax,
    Sigmoid,
}

/// Arrangement of a detector's output.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BoxFormat {
    /// Ultralytics YOLOv8 export: `[1, 4 + classes, boxes]`, box as
    /// centre x, centre y, width, height, then one score per class.
    Yolov8,
    /// The same, transposed: `[1, boxes, 4 + classes]`.
    Yolov8t,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputConfig {
    pub kind: OutputKind,
    /// Which output of the model (by position).
    #[serde(default)]
    pub index: usize,
    /// Classifier only.
    #[serde(default = "no_activation")]
    pub activation: Activation,
    /// Detector only.
    #[serde(default)]
    pub format: Option<BoxFormat>,
    /// Detector only: boxes covering less than this fraction of the input are ignored.
    #[serde(default)]
    pub min_box_fraction: f32,
    /// The model's labels in output order.
    pub labels: Vec<String>,
}

fn no_activation() -> Activation {
    Activation::None
}

/// How a category's score is made of its labels' scores.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Combine {
    /// The highest label score (detectors; independent labels).
    Max,
    /// The sum, at most 1 (softmax classifiers whose classes split one meaning).
    Sum,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CategoryConfig {
    /// `[a-z0-9_]`, at most 32 characters (a metric label value).
    pub name: String,
    /// Labels of the model that count as this category.
    pub labels: Vec<String>,
    #[serde(default = "max")]
    pub combine: Combine,
    /// At or above: the call is flagged for review (the wall shows it first).
    pub review: f32,
    /// At or above: an automatic report too. Above 1 never.
    pub high: f32,
    /// The report category of an automatic report.
    pub report_category: ReportCategory,
}

fn max() -> Combine {
    Combine::Max
}

impl ModelConfig {
    /// Reads and checks a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
            path: path.display().to_string(),
            source: e,
        })?;
        Self::parse(&text)
    }

    /// Parses and checks a config's text.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let c: ModelConfig = toml::from_str(text).map_err(|e| ConfigError::Toml(e.message().to_owned()))?;
        c.validate()?;
        Ok(c)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        if !name_ok(&self.id, proto::screen_api::MAX_NAME_LEN, true) {
            return bad(format!(
                "id `{}` must be 1-64 characters of a-z, 0-9, `_`, `-`, `.`",
                self.id
            ));
        }
        let i = &self.input;
        for (what, v) in [("input.width", i.width), ("input.height", i.height)] {
            if v == 0 || v > MAX_INPUT_SIDE {
                return bad(format!("{what} must be 1..={MAX_INPUT_SIDE}"));
            }
        }
        if !(i.range.is_finite() && i.range > 0.0) {
            return bad("input.range must be a positive number".into());
        }
        if i.std.iter().any(|s| !(s.is_finite() && *s != 0.0)) || i.mean.iter().any(|m| !m.is_finite()) {
            return bad("input.std must be non-zero and input.mean finite".into());
        }
        self.validate_output()?;
        self.validate_categories()
    }

    fn validate_output(&self) -> Result<(), ConfigError> {
        let bad = |m: &str| Err(ConfigError::Invalid(m.to_owned()));
        let o = &self.output;
        if o.labels.is_empty() || o.labels.len() > MAX_LABELS {
            return bad("output.labels must list 1..=4096 labels in output order");
        }
        let unique: HashSet<&String> = o.labels.iter().collect();
        if unique.len() != o.labels.len() {
            return bad("output.labels has a label twice");
        }
        match (o.kind, o.format) {
            (OutputKind::Detector, None) => return bad("a detector needs output.format (yolov8 or yolov8t)"),
            (OutputKind::Classifier, Some(_)) => return bad("output.format is for detectors only"),
            _ => {}
        }
        if o.kind == OutputKind::Detector && o.activation != Activation::None {
            return bad("output.activation is for classifiers only");
        }
        if !(0.0..1.0).contains(&o.min_box_fraction) {
            return bad("output.min_box_fraction must be in 0..1");
        }
        Ok(())
    }

    fn validate_categories(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        if self.categories.is_empty() || self.categories.len() > proto::screen_api::MAX_CATEGORIES {
            return bad("between 1 and 32 [[category]] tables are needed".into());
        }
        let mut names = HashSet::new();
        for c in &self.categories {
            if !name_ok(&c.name, 32, false) {
                return bad(format!(
                    "category name `{}` must be 1-32 characters of a-z, 0-9, `_`",
                    c.name
                ));
            }
            if !names.insert(c.name.as_str()) {
                return bad(format!("category `{}` is listed twice", c.name));
            }
            if c.labels.is_empty() {
                return bad(format!("category `{}` names no labels", c.name));
            }
            if let Some(l) = c.labels.iter().find(|l| !self.output.labels.contains(l)) {
                return bad(format!(
                    "category `{}`: `{l}` is not one of output.labels",
                    c.name
                ));
            }
            let ok = |t: f32| t.is_finite() && t > 0.0;
            if !ok(c.review) || !ok(c.high) || c.review > 1.0 || c.high < c.review {
                return bad(format!(
                    "category `{}`: thresholds need 0 < review <= 1 and high >= review (high > 1: never report)",
                    c.name
                ));
            }
        }
        Ok(())
    }
}

fn name_ok(s: &str, max: usize, extended: bool) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.bytes().all(|b| {
            b.is_ascii_lowercase()
                || b.is_ascii_digit()
                || b == b'_'
                || (extended && (b == b'-' || b == b'.'))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
id = "colour-means"
[input]
width = 32
height = 24
layout = "nchw"
[output]
kind = "classifier"
labels = ["red", "green", "blue"]
[[category]]
name = "red"
labels = ["red"]
review = 0.6
high = 0.75
report_category = "other"
"#;

    #[test]
    fn a_good_config_parses_with_defaults() {
        let c = ModelConfig::parse(GOOD).unwrap();
        assert_eq!(c.input.channels, ChannelOrder::Rgb);
        assert_eq!(c.input.resize, Resize::Stretch);
        assert_eq!(c.input.std, [1.0; 3]);
        assert_eq!(c.categories[0].combine, Combine::Max);
        assert_eq!(c.output.activation, Activation::None);
    }

    #[test]
    fn unknown_keys_are_refused() {
        let text = GOOD.replace("layout = \"nchw\"", "layout = \"nchw\"\ncolour = 1");
        let e = ModelConfig::parse(&text).unwrap_err().to_string();
        assert!(e.contains("unknown field"), "{e}");
    }

    #[test]
    fn a_category_must_name_labels_the_model_has() {
        let text = GOOD.replace("labels = [\"red\"]", "labels = [\"purple\"]");
        let e = ModelConfig::parse(&text).unwrap_err().to_string();
        assert!(e.contains("purple"), "{e}");
    }

    #[test]
    fn thresholds_must_be_ordered() {
        let text = GOOD.replace("high = 0.75", "high = 0.5");
        assert!(ModelConfig::parse(&text).is_err());
        let text = GOOD.replace("review = 0.6", "review = 0");
        assert!(ModelConfig::parse(&text).is_err());
        // A high threshold above 1 is how an operator turns automatic reports off.
        let text = GOOD.replace("high = 0.75", "high = 2");
        assert!(ModelConfig::parse(&text).is_ok());
    }

    #[test]
    fn a_detector_needs_its_box_format() {
        let text = GOOD.replace("kind = \"classifier\"", "kind = \"detector\"");
        assert!(ModelConfig::parse(&text).is_err());
        let text = text.replace("[output]", "[output]\nformat = \"yolov8\"");
        assert!(ModelConfig::parse(&text).is_ok());
    }

    #[test]
    fn the_shipped_nudenet_config_is_valid() {
        let text = include_str!("../models/nudenet-320n.toml");
        let c = ModelConfig::parse(text).unwrap();
        assert_eq!(c.output.labels.len(), 18);
        assert_eq!(c.input.resize, Resize::Letterbox);
    }
}
