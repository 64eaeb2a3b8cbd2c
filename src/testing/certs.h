// File: testing/certs.h
//
// Certificates made in the test, with OpenSSL: a CA, and leaves it signs for server or client use,
// with the names (IP addresses or DNS names) and validity a test needs (an expired one, say).
//
//   auto ca = testing::TestCa::create("test CA");
//   auto leaf = ca.issue("127.0.0.1", {"IP:127.0.0.1"});
//   testing::write_file(dir + "/server.crt", leaf.cert_pem);
//
// Thread-safety: a TestCa is used from one thread.
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <vector>

namespace kvroute::testing {

struct CertKey {
  std::string cert_pem;
  std::string key_pem;
};

class TestCa {
 public:
  static TestCa create(const std::string& common_name);
  // A leaf signed by this CA. `sans`: "IP:127.0.0.1", "DNS:engine-0.local". Valid from
  // now + not_before to now + not_after (both may be negative: an expired certificate).
  CertKey issue(const std::string& common_name, const std::vector<std::string>& sans,
                std::chrono::seconds not_before = std::chrono::hours(-1),
                std::chrono::seconds not_after = std::chrono::hours(24)) const;
  const std::string& cert_pem() const { return self_.cert_pem; }

  TestCa(TestCa&&) noexcept;
  TestCa& operator=(TestCa&&) noexcept;
  ~TestCa();

 private:
  TestCa();
  struct Impl;
  std::unique_ptr<Impl> impl_;
  CertKey self_;
};

// Writes (replaces) a file; aborts the test program on failure.
void write_file(const std::string& path, const std::string& text);

}  // namespace kvroute::testing
