// onnxruntime-node (1.30, Linux) starts Microsoft's telemetry with its first session unless told not to:
// it reads /etc/machine-id and leaves an empty mat-debug-<pid>.log in the temp directory of every
// process that runs a model. Imported before onnxruntime-node; a value the user set stays.
process.env.ORT_DISABLE_TELEMETRY ??= '1';
