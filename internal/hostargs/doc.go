// Package hostargs is the contract between the shim and its host program,
// nebula-host: the command line of a rewritten task's process (Args, made
// by oci.Rewrite, read by package hostcmd) and of `nebula-host compile`
// (Compile, CompileResult and the ExitCompile* codes, used by the shim's
// compile at Create). Both sides render and parse it here, so a field
// cannot be added on one side and forgotten on the other.
//
// Values are validated where they enter Nebula (package oci, at Create);
// Parse and ParseCompile only refuse command lines that are malformed:
// unknown flags, values of the wrong type, an unknown mode or runtime.
// Zero values mean "not set": the host's default applies.
package hostargs
