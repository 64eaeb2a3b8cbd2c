// File: doctor/doctor_command.h
//
// `kvroute doctor`: its flags and entry point (doctor/doctor.h).
#pragma once

namespace CLI {
class App;
}

namespace kvroute::doctor {

// Adds the `doctor` subcommand to `app`; its exit code goes to `exit_code` (0: no failures, 1:
// failures found, 2: bad arguments).
void add_doctor_command(CLI::App& app, int& exit_code);

}  // namespace kvroute::doctor
