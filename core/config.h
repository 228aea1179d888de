// Training configs: reading a TrainSpec from Protobuf text format, command-
// line overrides (--set PATH=VALUE) addressed by field path through
// reflection, validation of everything that can be checked without building
// the net, and the text a run folder stores as config.textproto. Every
// mistake a user can make here throws UserError with one line naming where.
#pragma once

#include <string>

#include "core/dptrain.pb.h"

namespace dptrain {

// Reads and parses the file at `path`. Missing or unreadable file:
// UserError naming the path. Syntax errors as parse_train_spec.
TrainSpec load_train_spec(const std::string& path);

// Parses Protobuf text format. A syntax error or an unknown field throws
// UserError "SOURCE:LINE:COLUMN: message", 1-based as editors show them
// (a tab advances the column to the next multiple of 8, as in GCC).
TrainSpec parse_train_spec(const std::string& text, const std::string& source_name);

// The same for any message of the schema (sweep configs, launch specs).
void parse_text(const std::string& text, const std::string& source_name,
                google::protobuf::Message* out);
void load_text(const std::string& path, google::protobuf::Message* out);

// Where a run (or sweep) goes when no folder is given:
// runs/NAME-YYYYmmdd-HHMMSS, NAME being `name` or else the config file's
// stem. Both binaries name their folders so.
std::string default_run_dir(const std::string& name, const std::string& config_path);

// Now in UTC, ISO 8601 ("2026-12-01T10:00:00Z"): how the files that record
// a moment write it.
std::string utc_now();

// Applies one override "PATH=VALUE". PATH is dot-separated field names;
// an element of a repeated message field is addressed by index or by the
// value of its `name` field (an all-digit selector is an index):
//   solver.base_lr=0.1
//   solver.lr_schedule.policy=cosine          (enum by name, any case)
//   data.augment.horizontal_flip=true         (true, false, 1 or 0)
//   net.layer[2].convolution.num_output=12
//   net.layer[conv1].convolution.num_output=12
//   data.mean=0.5,0.4,0.3                     (replaces the whole list;
//                                              an empty value empties it)
//   data.mean[1]=0.4                          (one element, by index)
// Intermediate messages are created as needed. Numbers are parsed strictly
// (whole string, in range, floats finite). On error throws UserError naming
// the override and the path, and leaves *spec unchanged.
void apply_override(TrainSpec* spec, const std::string& assignment);

// Checks every value whose validity does not depend on the net's shapes;
// throws UserError with the field path and the bad value, e.g.
// "solver.base_lr must be > 0 (got -1)". Layer types and shapes are left to
// the net builder.
void validate_train_spec(const TrainSpec& spec);

// The spec as Protobuf text (fields that are set, in schema order): what a
// run folder stores as config.textproto. parse_train_spec(to_text(s), ...)
// gives back exactly s.
std::string to_text(const google::protobuf::Message& spec);

}  // namespace dptrain
