//! The tools of InvokeCodeInterpreter (spec §4.4): their arguments, checked before the response
//! stream starts (so bad input is a plain `ValidationException`), and the MCP-style content
//! blocks their results are made of.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Value, json};

use crate::environment::Environment;
use crate::error::{InterpreterError, Result};
use crate::paths::WorkspacePath;

/// The most a writeFiles call may carry, decoded (AgentCore's inline limit).
pub const MAX_WRITE_BYTES: usize = 100 * 1024 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Language {
    Python,
    JavaScript,
    TypeScript,
}

#[derive(Debug)]
pub enum Invocation {
    ExecuteCode {
        language: Language,
        /// For JavaScript and TypeScript: the program that runs the cell (Deno or Node.js).
        runner: Option<String>,
        code: String,
        clear_context: bool,
    },
    ExecuteCommand {
        command: String,
    },
    StartCommandExecution {
        command: String,
    },
    GetTask {
        task_id: String,
    },
    StopTask {
        task_id: String,
    },
    WriteFiles {
        files: Vec<(WorkspacePath, Vec<u8>)>,
    },
    ReadFiles {
        paths: Vec<WorkspacePath>,
    },
    ListFiles {
        directory: WorkspacePath,
    },
    RemoveFiles {
        paths: Vec<WorkspacePath>,
    },
}

fn field(name: &str) -> String {
    format!("arguments.{name}")
}

fn required_text(arguments: &Value, name: &str, tool: &str) -> Result<String> {
    match arguments.get(name).and_then(Value::as_str) {
        Some(text) if !text.trim().is_empty() => Ok(text.to_string()),
        _ => Err(InterpreterError::invalid(
            field(name),
            format!("{tool} needs a non-empty `{name}`"),
        )),
    }
}

fn paths(arguments: &Value, tool: &str) -> Result<Vec<WorkspacePath>> {
    let Some(list) = arguments
        .get("paths")
        .and_then(Value::as_array)
        .filter(|l| !l.is_empty())
    else {
        return Err(InterpreterError::invalid(
            field("paths"),
            format!("{tool} needs a non-empty list of `paths`"),
        ));
    };
    list.iter()
        .enumerate()
        .map(|(i, path)| {
            let path = path.as_str().unwrap_or_default();
            let parsed = WorkspacePath::parse(path)
                .map_err(|e| InterpreterError::invalid(format!("arguments.paths[{i}]"), e))?;
            if parsed.is_root() {
                return Err(InterpreterError::invalid(
                    format!("arguments.paths[{i}]"),
                    "a path must name a file or directory inside the working directory, not the directory itself",
                ));
            }
            Ok(parsed)
        })
        .collect()
}

impl Invocation {
    /// Checks a tool call's arguments against what the tool needs.
    pub fn parse(name: &str, arguments: &Value, environment: &Environment) -> Result<Invocation> {
        Ok(match name {
            "executeCode" => {
                let language = match arguments.get("language").and_then(Value::as_str).unwrap_or("python") {
                    "python" => Language::Python,
                    "javascript" => Language::JavaScript,
                    "typescript" => Language::TypeScript,
                    other => {
                        return Err(InterpreterError::invalid(
                            field("language"),
                            format!("language `{other}` is not one of python, javascript, typescript"),
                        ));
                    }
                };
                let runtime = arguments.get("runtime").and_then(Value::as_str);
                let runner = match (language, runtime) {
                    (Language::Python, None | Some("python")) => None,
                    (Language::JavaScript | Language::TypeScript, None | Some("deno")) => Some(environment.deno().ok_or_else(|| {
                        InterpreterError::invalid(
                            field("language"),
                            "JavaScript and TypeScript need Deno, which this server's interpreter environment lacks \
                             (build it with `make interpreter-env`)",
                        )
                    })?),
                    (Language::JavaScript, Some("nodejs")) => Some(environment.node().ok_or_else(|| {
                        InterpreterError::invalid(field("runtime"), "Node.js is not installed on this server; use deno")
                    })?),
                    (_, Some(runtime)) => {
                        return Err(InterpreterError::invalid(
                            field("runtime"),
                            format!("runtime `{runtime}` cannot run {language:?} code"),
                        ));
                    }
                };
                ExecuteCode {
                    language,
                    runner,
                    code: arguments
                        .get("code")
                        .and_then(Value::as_str)
                        .map(str::to_string)
                        .ok_or_else(|| InterpreterError::invalid(field("code"), "executeCode needs `code`"))?,
                    clear_context: arguments.get("clearContext").and_then(Value::as_bool).unwrap_or(false),
                }
            }
            "executeCommand" => ExecuteCommand {
                command: required_text(arguments, "command", name)?,
            },
            "startCommandExecution" => StartCommandExecution {
                command: required_text(arguments, "command", name)?,
            },
            "getTask" => GetTask {
                task_id: required_text(arguments, "taskId", name)?,
            },
            "stopTask" => StopTask {
                task_id: required_text(arguments, "taskId", name)?,
            },
            "writeFiles" => WriteFiles {
                files: files_to_write(arguments)?,
            },
            "readFiles" => ReadFiles {
                paths: paths(arguments, name)?,
            },
            "removeFiles" => RemoveFiles {
                paths: paths(arguments, name)?,
            },
            "listFiles" => {
                let (key, directory) = match (arguments.get("directoryPath"), arguments.get("path")) {
                    (Some(Value::String(dir)), _) => ("directoryPath", dir.as_str()),
                    (_, Some(Value::String(dir))) => ("path", dir.as_str()),
                    _ => ("directoryPath", ""),
                };
                ListFiles {
                    directory: WorkspacePath::parse(directory).map_err(|e| InterpreterError::invalid(field(key), e))?,
                }
            }
            other => {
                return Err(InterpreterError::invalid(
                    "name",
                    format!("`{other}` is not a Code Interpreter tool"),
                ));
            }
        })
    }
}

use Invocation::*;

/// Every entry checked and decoded before anything is written: all or nothing.
fn files_to_write(arguments: &Value) -> Result<Vec<(WorkspacePath, Vec<u8>)>> {
    let Some(entries) = arguments
        .get("content")
        .and_then(Value::as_array)
        .filter(|l| !l.is_empty())
    else {
        return Err(InterpreterError::invalid(
            field("content"),
            "writeFiles needs a non-empty list of `content` entries ({path, text} or {path, blob})",
        ));
    };
    let mut total = 0usize;
    let mut files = Vec::with_capacity(entries.len());
    for (i, entry) in entries.iter().enumerate() {
        let at = |name: &str| format!("arguments.content[{i}].{name}");
        let path = entry.get("path").and_then(Value::as_str).unwrap_or_default();
        let path = WorkspacePath::parse(path).map_err(|e| InterpreterError::invalid(at("path"), e))?;
        if path.is_root() {
            return Err(InterpreterError::invalid(at("path"), "a file needs a path"));
        }
        let data = match (entry.get("text"), entry.get("blob")) {
            (Some(Value::String(text)), None) => text.clone().into_bytes(),
            (None, Some(Value::String(blob))) => BASE64
                .decode(blob)
                .map_err(|e| InterpreterError::invalid(at("blob"), format!("blob is not valid base64: {e}")))?,
            _ => {
                return Err(InterpreterError::invalid(
                    at("text"),
                    "each entry needs exactly one of `text` (a string) or `blob` (base64)",
                ));
            }
        };
        total += data.len();
        if total > MAX_WRITE_BYTES {
            return Err(InterpreterError::invalid(
                field("content"),
                format!("writeFiles may carry at most {MAX_WRITE_BYTES} bytes in one call"),
            ));
        }
        files.push((path, data));
    }
    Ok(files)
}

// ---- results -----------------------------------------------------------------------------------

pub fn text_block(text: impl Into<String>) -> Value {
    json!({"type": "text", "text": text.into()})
}

pub fn image_block(png_base64: String) -> Value {
    json!({"type": "image", "data": png_base64, "mimeType": "image/png"})
}

/// A `CodeInterpreterResult` event.
pub fn result(content: Vec<Value>, structured: Option<Value>, is_error: bool) -> Value {
    let mut result = json!({"content": content, "isError": is_error});
    if let Some(structured) = structured {
        result["structuredContent"] = structured;
    }
    result
}

/// A failed tool call that the caller should see as a result, not as an exception.
pub fn error_result(message: impl Into<String>) -> Value {
    result(vec![text_block(message)], None, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> Environment {
        Environment::new(std::path::Path::new("/nonexistent"))
    }

    fn field_of(error: InterpreterError) -> String {
        match error {
            InterpreterError::Invalid { field, .. } => field,
            other => panic!("not a validation error: {other}"),
        }
    }

    #[test]
    fn bad_arguments_name_their_field() {
        let cases = [
            ("executeCode", json!({}), "arguments.code"),
            (
                "executeCode",
                json!({"code": "1", "language": "ruby"}),
                "arguments.language",
            ),
            (
                "executeCode",
                json!({"code": "1", "runtime": "deno"}),
                "arguments.runtime",
            ),
            ("executeCommand", json!({"command": "  "}), "arguments.command"),
            ("writeFiles", json!({"content": []}), "arguments.content"),
            (
                "writeFiles",
                json!({"content": [{"path": "a", "blob": "!!"}]}),
                "arguments.content[0].blob",
            ),
            (
                "writeFiles",
                json!({"content": [{"path": "../a", "text": "x"}]}),
                "arguments.content[0].path",
            ),
            (
                "writeFiles",
                json!({"content": [{"path": "a", "text": "x", "blob": "eA=="}]}),
                "arguments.content[0].text",
            ),
            ("readFiles", json!({"paths": ["/etc/passwd"]}), "arguments.paths[0]"),
            ("removeFiles", json!({"paths": ["."]}), "arguments.paths[0]"),
            ("listFiles", json!({"path": "/root"}), "arguments.path"),
            ("getTask", json!({}), "arguments.taskId"),
            ("launchMissiles", json!({}), "name"),
        ];
        for (tool, arguments, expected) in cases {
            let error = Invocation::parse(tool, &arguments, &env()).expect_err(tool);
            assert_eq!(field_of(error), expected, "{tool} {arguments}");
        }
    }

    #[test]
    fn javascript_without_deno_is_refused_clearly() {
        let error = Invocation::parse("executeCode", &json!({"code": "1", "language": "javascript"}), &env());
        assert_eq!(field_of(error.expect_err("no deno")), "arguments.language");
    }

    #[test]
    fn blobs_are_decoded_and_text_kept() {
        let arguments = json!({"content": [{"path": "a.bin", "blob": "AAE="}, {"path": "d/b.txt", "text": "hi"}]});
        let Ok(WriteFiles { files }) = Invocation::parse("writeFiles", &arguments, &env()) else {
            panic!("writeFiles did not parse");
        };
        assert_eq!(files[0].1, vec![0, 1]);
        assert_eq!(files[1].0.relative(), "d/b.txt");
    }
}
