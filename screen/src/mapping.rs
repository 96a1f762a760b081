//! From the model's raw output to a score per label, and from label scores
//! to a score and a level per category (the config's mapping). Pure
//! functions on plain slices: the model runner hands them the output
//! tensor's values and shape.

use crate::config::{Activation, BoxFormat, CategoryConfig, Combine, ModelConfig, OutputKind};
use crate::error::SampleError;
use proto::screen_api::{CategoryScore, Level};

/// Scores per label, in the config's label order, each in `0.0..=1.0`.
pub fn label_scores(c: &ModelConfig, shape: &[usize], values: &[f32]) -> Result<Vec<f32>, SampleError> {
    let n = c.output.labels.len();
    let scores = match c.output.kind {
        OutputKind::Classifier => classifier(shape, values, n, c.output.activation)?,
        OutputKind::Detector => detector(c, shape, values)?,
    };
    // NaN (a broken model) counts as nothing rather than poisoning the max.
    Ok(scores
        .into_iter()
        .map(|s| if s.is_nan() { 0.0 } else { s.clamp(0.0, 1.0) })
        .collect())
}

fn classifier(shape: &[usize], values: &[f32], n: usize, act: Activation) -> Result<Vec<f32>, SampleError> {
    let elements: usize = shape.iter().product();
    if elements != n || values.len() != n {
        return Err(SampleError::Output(format!(
            "classifier output {shape:?} does not hold {n} labels"
        )));
    }
    Ok(match act {
        Activation::None => values.to_vec(),
        Activation::Sigmoid => values.iter().map(|v| 1.0 / (1.0 + (-v).exp())).collect(),
        Activation::Softmax => {
            let max = values.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let exps: Vec<f32> = values.iter().map(|v| (v - max).exp()).collect();
            let sum: f32 = exps.iter().sum();
            exps.iter().map(|e| e / sum).collect()
        }
    })
}

/// A label's score is the best score of any box of that class (large
/// enough to count); no NMS is needed for a maximum.
fn detector(c: &ModelConfig, shape: &[usize], values: &[f32]) -> Result<Vec<f32>, SampleError> {
    let n = c.output.labels.len();
    let rows = 4 + n;
    let (transposed, boxes) = match (c.output.format, shape) {
        (Some(BoxFormat::Yolov8), [1, r, b]) if *r == rows => (false, *b),
        (Some(BoxFormat::Yolov8t), [1, b, r]) if *r == rows => (true, *b),
        _ => {
            return Err(SampleError::Output(format!(
                "detector output {shape:?} is not [1, 4 + {n} classes, boxes] in the configured format"
            )))
        }
    };
    if values.len() != rows * boxes {
        return Err(SampleError::Output(
            "output length does not match its shape".into(),
        ));
    }
    let at = |row: usize, b: usize| {
        if transposed {
            values[b * rows + row]
        } else {
            values[row * boxes + b]
        }
    };
    let area = (c.input.width * c.input.height) as f32;
    let min_area = c.output.min_box_fraction * area;
    let mut best = vec![0f32; n];
    for b in 0..boxes {
        if min_area > 0.0 && at(2, b) * at(3, b) < min_area {
            continue;
        }
        for (k, slot) in best.iter_mut().enumerate() {
            *slot = slot.max(at(4 + k, b));
        }
    }
    Ok(best)
}

/// The score and level of every category for the label scores of one sample.
pub fn categorise(c: &ModelConfig, labels: &[f32]) -> Vec<CategoryScore> {
    c.categories
        .iter()
        .map(|cat| {
            let score = category_score(c, cat, labels);
            CategoryScore {
                category: cat.name.clone(),
                score,
                level: level(cat, score),
                report_category: cat.report_category,
            }
        })
        .collect()
}

fn category_score(c: &ModelConfig, cat: &CategoryConfig, labels: &[f32]) -> f32 {
    let scores = cat.labels.iter().filter_map(|l| {
        let i = c.output.labels.iter().position(|x| x == l)?;
        labels.get(i).copied()
    });
    match cat.combine {
        Combine::Max => scores.fold(0.0, f32::max),
        Combine::Sum => scores.sum::<f32>().min(1.0),
    }
}

/// Where `score` stands against the category's thresholds.
pub fn level(cat: &CategoryConfig, score: f32) -> Level {
    if score >= cat.high {
        Level::High
    } else if score >= cat.review {
        Level::Review
    } else {
        Level::Clear
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(kind: &str, extra_output: &str, categories: &str) -> ModelConfig {
        ModelConfig::parse(&format!(
            r#"
id = "t"
[input]
width = 10
height = 10
layout = "nchw"
[output]
kind = "{kind}"
{extra_output}
labels = ["safe", "porn", "sexy"]
{categories}
"#
        ))
        .unwrap()
    }

    const SEXUAL_SUM: &str = r#"
[[category]]
name = "sexual"
labels = ["porn", "sexy"]
combine = "sum"
review = 0.5
high = 0.8
report_category = "nudity"
"#;

    #[test]
    fn softmax_classifier_labels_sum_into_a_category() {
        let c = config("classifier", "activation = \"softmax\"", SEXUAL_SUM);
        // logits: safe 0, porn ln 2, sexy ln 2 -> 1/5, 2/5, 2/5
        let l = label_scores(&c, &[1, 3], &[0.0, 2f32.ln(), 2f32.ln()]).unwrap();
        assert!((l[1] - 0.4).abs() < 1e-6);
        let cats = categorise(&c, &l);
        assert!((cats[0].score - 0.8).abs() < 1e-5);
        assert_eq!(cats[0].level, Level::High);
    }

    #[test]
    fn levels_follow_the_thresholds_inclusively() {
        let c = config("classifier", "", SEXUAL_SUM);
        let cat = &c.categories[0];
        assert_eq!(level(cat, 0.49), Level::Clear);
        assert_eq!(level(cat, 0.5), Level::Review);
        assert_eq!(level(cat, 0.79), Level::Review);
        assert_eq!(level(cat, 0.8), Level::High);
    }

    #[test]
    fn a_category_by_max_takes_its_best_label() {
        let cats = SEXUAL_SUM.replace("combine = \"sum\"", "combine = \"max\"");
        let c = config("classifier", "", &cats);
        let out = categorise(&c, &[0.1, 0.3, 0.45]);
        assert_eq!((out[0].score, out[0].level), (0.45, Level::Clear));
    }

    #[test]
    fn sigmoid_and_out_of_range_values_are_clamped_to_probabilities() {
        let c = config("classifier", "activation = \"sigmoid\"", SEXUAL_SUM);
        let l = label_scores(&c, &[1, 3], &[0.0, 100.0, -100.0]).unwrap();
        assert_eq!(l[0], 0.5);
        assert!(l[1] > 0.999 && l[2] < 0.001);
        let raw = config("classifier", "", SEXUAL_SUM);
        let l = label_scores(&raw, &[1, 3], &[-3.0, 7.0, f32::NAN]).unwrap();
        assert_eq!(l, vec![0.0, 1.0, 0.0]);
    }

    #[test]
    fn a_classifier_output_of_the_wrong_size_is_an_error() {
        let c = config("classifier", "", SEXUAL_SUM);
        assert!(label_scores(&c, &[1, 4], &[0.0; 4]).is_err());
    }

    /// Two boxes of a 3-class YOLOv8 output, `[1, 7, 2]` row-major.
    fn yolo(boxes: [[f32; 7]; 2]) -> Vec<f32> {
        (0..7).flat_map(|r| boxes.iter().map(move |b| b[r])).collect()
    }

    #[test]
    fn a_detector_label_scores_its_best_box() {
        let c = config("detector", "format = \"yolov8\"", SEXUAL_SUM);
        let v = yolo([
            [5.0, 5.0, 4.0, 4.0, 0.9, 0.2, 0.1],
            [5.0, 5.0, 4.0, 4.0, 0.1, 0.6, 0.05],
        ]);
        let l = label_scores(&c, &[1, 7, 2], &v).unwrap();
        assert_eq!(l, vec![0.9, 0.6, 0.1]);
        // The same boxes transposed.
        let t = config("detector", "format = \"yolov8t\"", SEXUAL_SUM);
        let vt: Vec<f32> = (0..2)
            .flat_map(|b| (0..7).map(move |r| (r, b)))
            .map(|(r, b)| v[r * 2 + b])
            .collect();
        assert_eq!(label_scores(&t, &[1, 2, 7], &vt).unwrap(), l);
    }

    #[test]
    fn a_detector_ignores_boxes_smaller_than_the_minimum() {
        let c = config(
            "detector",
            "format = \"yolov8\"\nmin_box_fraction = 0.1",
            SEXUAL_SUM,
        );
        // 100 px input: a 2x2 box is 4%, a 4x4 box 16%.
        let v = yolo([
            [5.0, 5.0, 2.0, 2.0, 0.0, 0.99, 0.0],
            [5.0, 5.0, 4.0, 4.0, 0.0, 0.3, 0.0],
        ]);
        assert_eq!(label_scores(&c, &[1, 7, 2], &v).unwrap()[1], 0.3);
    }

    #[test]
    fn a_detector_output_of_another_shape_is_an_error() {
        let c = config("detector", "format = \"yolov8\"", SEXUAL_SUM);
        assert!(label_scores(&c, &[1, 8, 2], &[0.0; 16]).is_err());
        assert!(label_scores(&c, &[7, 2], &[0.0; 14]).is_err());
    }
}
