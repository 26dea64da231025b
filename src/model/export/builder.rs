//! A small builder of ONNX graphs over tract-onnx's protobuf types.

use std::io::Write;
use std::path::Path;

use prost::Message;
use tract_onnx::pb::attribute_proto::AttributeType;
use tract_onnx::pb::tensor_proto::{DataLocation, DataType};
use tract_onnx::pb::tensor_shape_proto::{Dimension, dimension};
use tract_onnx::pb::type_proto::{self, Tensor as TensorType};
use tract_onnx::pb::{
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, StringStringEntryProto,
    TensorProto, TensorShapeProto, TypeProto, ValueInfoProto,
};

/// ONNX opset of exported graphs: 17 has `LayerNormalization`, as optimum's exports do.
pub const OPSET: i64 = 17;

/// Weights above this many bytes go to an external data file, as optimum does for large
/// models: a protobuf message cannot exceed 2 GiB.
const MAX_INLINE_BYTES: usize = 1 << 30;

/// A dimension of a graph input or output: fixed or symbolic.
#[derive(Debug, Clone)]
pub enum Dim {
    /// A fixed size.
    Fixed(i64),
    /// A named, free size.
    Param(&'static str),
}

/// An attribute value.
#[derive(Debug, Clone)]
pub enum Attr {
    /// An integer.
    Int(i64),
    /// A float.
    Float(f32),
    /// A list of integers.
    Ints(Vec<i64>),
}

/// Builds one ONNX graph: initializers, nodes in topological order, inputs and outputs.
#[derive(Debug, Default)]
pub struct GraphBuilder {
    nodes: Vec<NodeProto>,
    initializers: Vec<(String, Vec<i64>, Vec<f32>)>,
    int_initializers: Vec<TensorProto>,
    inputs: Vec<ValueInfoProto>,
    outputs: Vec<ValueInfoProto>,
    counter: usize,
}

fn value_info(name: &str, dims: &[Dim]) -> ValueInfoProto {
    typed_value_info(name, dims, DataType::Float)
}

fn typed_value_info(name: &str, dims: &[Dim], elem_type: DataType) -> ValueInfoProto {
    let dim = dims
        .iter()
        .map(|d| Dimension {
            value: Some(match d {
                Dim::Fixed(v) => dimension::Value::DimValue(*v),
                Dim::Param(p) => dimension::Value::DimParam(p.to_string()),
            }),
            ..Default::default()
        })
        .collect();
    ValueInfoProto {
        name: name.to_string(),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(TensorType {
                elem_type: elem_type as i32,
                shape: Some(TensorShapeProto { dim }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

impl GraphBuilder {
    /// Declares a float input.
    pub fn input(&mut self, name: &str, dims: &[Dim]) -> String {
        self.inputs.push(value_info(name, dims));
        name.to_string()
    }

    /// Declares an int64 input (token ids).
    pub fn input_i64(&mut self, name: &str, dims: &[Dim]) -> String {
        self.inputs
            .push(typed_value_info(name, dims, DataType::Int64));
        name.to_string()
    }

    /// Declares `value` as a float output named `name` (through an Identity when renamed).
    pub fn output(&mut self, value: &str, name: &str, dims: &[Dim]) {
        if value != name {
            self.nodes.push(NodeProto {
                input: vec![value.to_string()],
                output: vec![name.to_string()],
                name: format!("{name}_identity"),
                op_type: "Identity".into(),
                ..Default::default()
            });
        }
        self.outputs.push(value_info(name, dims));
    }

    /// Adds a float initializer of `shape`.
    pub fn weight(&mut self, name: &str, shape: &[usize], data: Vec<f32>) -> String {
        assert_eq!(
            shape.iter().product::<usize>(),
            data.len(),
            "{name}: data fills its shape"
        );
        self.initializers.push((
            name.to_string(),
            shape.iter().map(|&d| d as i64).collect(),
            data,
        ));
        name.to_string()
    }

    /// Adds a float scalar constant.
    pub fn scalar(&mut self, value: f32) -> String {
        let name = self.fresh("const");
        self.weight(&name, &[], vec![value])
    }

    /// Adds an int64 vector constant (shapes, axes).
    pub fn ints(&mut self, values: &[i64]) -> String {
        let name = self.fresh("ints");
        self.int_initializers.push(TensorProto {
            dims: vec![values.len() as i64],
            data_type: DataType::Int64 as i32,
            raw_data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            name: name.clone(),
            ..Default::default()
        });
        name
    }

    /// Adds an int64 scalar constant.
    pub fn int_scalar(&mut self, value: i64) -> String {
        let name = self.fresh("int");
        self.int_initializers.push(TensorProto {
            dims: vec![],
            data_type: DataType::Int64 as i32,
            raw_data: value.to_le_bytes().to_vec(),
            name: name.clone(),
            ..Default::default()
        });
        name
    }

    fn fresh(&mut self, stem: &str) -> String {
        self.counter += 1;
        format!("/{stem}_{}", self.counter)
    }

    /// Adds a node with one output and returns the output's name; `scope` prefixes its name
    /// (`/encoder/layers.0/self_attn/...`), as exporters name nodes after modules.
    pub fn node(
        &mut self,
        scope: &str,
        op: &str,
        inputs: &[&str],
        attrs: &[(&str, Attr)],
    ) -> String {
        self.counter += 1;
        let name = format!("{scope}/{op}_{}", self.counter);
        let output = format!("{name}_output_0");
        let attribute = attrs
            .iter()
            .map(|(n, a)| {
                let mut p = AttributeProto {
                    name: n.to_string(),
                    ..Default::default()
                };
                match a {
                    Attr::Int(i) => {
                        p.r#type = AttributeType::Int as i32;
                        p.i = *i;
                    }
                    Attr::Float(f) => {
                        p.r#type = AttributeType::Float as i32;
                        p.f = *f;
                    }
                    Attr::Ints(v) => {
                        p.r#type = AttributeType::Ints as i32;
                        p.ints = v.clone();
                    }
                }
                p
            })
            .collect();
        self.nodes.push(NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![output.clone()],
            name,
            op_type: op.to_string(),
            attribute,
            ..Default::default()
        });
        output
    }

    /// Writes the model to `path`; when the weights are too large for one protobuf message,
    /// to `path` and `path` + `_data` (ONNX external data, offsets aligned to 64 bytes).
    pub fn write(
        self,
        path: &Path,
        producer: &str,
        metadata: &[(&str, String)],
    ) -> std::io::Result<()> {
        self.write_inline_up_to(path, producer, metadata, MAX_INLINE_BYTES)
    }

    /// [`GraphBuilder::write`] with weights beyond `max_inline` bytes in all written as
    /// external data.
    fn write_inline_up_to(
        self,
        path: &Path,
        producer: &str,
        metadata: &[(&str, String)],
        max_inline: usize,
    ) -> std::io::Result<()> {
        let total: usize = self.initializers.iter().map(|(_, _, d)| d.len() * 4).sum();
        let external = total > max_inline;
        let data_name = format!(
            "{}_data",
            path.file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("model.onnx")
        );
        let mut data_file = if external {
            Some(std::io::BufWriter::new(std::fs::File::create(
                path.with_file_name(&data_name),
            )?))
        } else {
            None
        };
        let mut offset = 0usize;
        let mut initializer =
            Vec::with_capacity(self.initializers.len() + self.int_initializers.len());
        for (name, dims, data) in self.initializers {
            let bytes: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
            let mut t = TensorProto {
                dims,
                data_type: DataType::Float as i32,
                name,
                ..Default::default()
            };
            match data_file.as_mut() {
                Some(file) if bytes.len() >= 1024 => {
                    let pad = (64 - offset % 64) % 64;
                    file.write_all(&vec![0u8; pad])?;
                    offset += pad;
                    file.write_all(&bytes)?;
                    t.data_location = Some(DataLocation::External as i32);
                    t.external_data = vec![
                        entry("location", data_name.clone()),
                        entry("offset", offset.to_string()),
                        entry("length", bytes.len().to_string()),
                    ];
                    offset += bytes.len();
                }
                _ => t.raw_data = bytes,
            }
            initializer.push(t);
        }
        initializer.extend(self.int_initializers);
        if let Some(mut file) = data_file {
            file.flush()?;
        }
        let model = ModelProto {
            ir_version: 8,
            opset_import: vec![OperatorSetIdProto {
                domain: String::new(),
                version: OPSET,
            }],
            producer_name: producer.to_string(),
            producer_version: env!("CARGO_PKG_VERSION").to_string(),
            graph: Some(GraphProto {
                node: self.nodes,
                name: "main_graph".into(),
                initializer,
                input: self.inputs,
                output: self.outputs,
                ..Default::default()
            }),
            metadata_props: metadata.iter().map(|(k, v)| entry(k, v.clone())).collect(),
            ..Default::default()
        };
        std::fs::write(path, model.encode_to_vec())
    }
}

fn entry(key: &str, value: String) -> StringStringEntryProto {
    StringStringEntryProto {
        key: key.to_string(),
        value,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tract_onnx::prelude::*;

    /// `x [2, 300] @ w [300, 40] + b`, written inline and with its weights as external data
    /// (forced by a limit of 0 bytes, as a model past 2 GiB would be): tract loads both and
    /// they give the same bits; the external file holds the large weight at a 64-byte offset,
    /// the small bias stays inline.
    #[test]
    fn external_data_loads_as_inline_weights_do() {
        let tmp = tempfile::tempdir().unwrap();
        let build = || {
            let mut g = GraphBuilder::default();
            let x = g.input("x", &[Dim::Fixed(2), Dim::Fixed(300)]);
            let w = g.weight(
                "w",
                &[300, 40],
                (0..12000).map(|i| (i as f32 * 0.37).sin()).collect(),
            );
            let b = g.weight("b", &[40], (0..40).map(|i| i as f32 * 0.01).collect());
            let y = g.node("/test", "MatMul", &[&x, &w], &[]);
            let y = g.node("/test", "Add", &[&y, &b], &[]);
            g.output(&y, "y", &[Dim::Fixed(2), Dim::Fixed(40)]);
            g
        };
        let inline = tmp.path().join("inline.onnx");
        build().write(&inline, "test", &[]).unwrap();
        let external = tmp.path().join("external.onnx");
        build()
            .write_inline_up_to(&external, "test", &[], 0)
            .unwrap();
        let data = tmp.path().join("external.onnx_data");
        assert_eq!(std::fs::metadata(&data).unwrap().len(), 12000 * 4);
        assert!(!tmp.path().join("inline.onnx_data").exists());
        let run = |path: &Path| -> Vec<u32> {
            let plan = tract_onnx::onnx()
                .model_for_path(path)
                .unwrap()
                .into_optimized()
                .unwrap()
                .into_runnable()
                .unwrap();
            let x = Tensor::from_shape(
                &[2, 300],
                &(0..600).map(|i| i as f32 / 600.0).collect::<Vec<_>>(),
            )
            .unwrap();
            let y = plan.run(tvec!(x.into_tvalue())).unwrap();
            y[0].to_plain_array_view::<f32>()
                .unwrap()
                .iter()
                .map(|v| v.to_bits())
                .collect()
        };
        assert_eq!(run(&inline), run(&external));
    }
}
