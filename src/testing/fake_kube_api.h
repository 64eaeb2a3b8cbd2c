// File: testing/fake_kube_api.h
//
// A fake of the Kubernetes API server for discovery tests in C++ (the Node one in tests/e2e plays
// the fuller part): one InferencePool, pods, a global resourceVersion; GET of the pool, list of
// pods (labelSelector ignored: every pod here is the pool's), and watches over chunked JSON lines
// (ADDED, MODIFIED, DELETED, ERROR) that replay the events after the version asked for. Controls:
// pods changing, every watch dropped, compaction (the next watch from an older version gets an
// ERROR event with code 410). Plain HTTP on 127.0.0.1.
//
// Thread-safety: every member is safe from any thread; the server runs a thread per connection.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "common/mutex.h"

namespace kvroute::testing {

class FakeKubeApi {
 public:
  // `pool_json`: the InferencePool object (metadata.name must be the one the client asks for).
  explicit FakeKubeApi(std::string pool_json);
  ~FakeKubeApi();
  FakeKubeApi(const FakeKubeApi&) = delete;
  FakeKubeApi& operator=(const FakeKubeApi&) = delete;

  std::string url() const;
  // Adds or updates a pod (ADDED / MODIFIED to pod watches).
  void set_pod(const std::string& name, const std::string& ip, bool ready);
  void remove_pod(const std::string& name);
  // Ends every open watch abruptly.
  void drop_watches();
  // History before now is gone: a watch from an older version gets 410.
  void compact();
  int lists() const { return lists_.load(); }
  int watches() const { return watches_.load(); }

 private:
  void serve();
  void handle(int fd);
  std::string pod_json(const std::string& name) const REQUIRES(mu_);
  void emit(const std::string& type, const std::string& object) REQUIRES(mu_);

  const std::string pool_json_;
  int listen_fd_ = -1;
  std::uint16_t port_ = 0;
  std::atomic<bool> stopping_{false};
  std::atomic<int> lists_{0}, watches_{0};
  std::thread accept_;

  mutable Mutex mu_;
  struct PodState {
    std::string ip;
    bool ready;
    std::uint64_t rv;
  };
  std::map<std::string, PodState> pods_ GUARDED_BY(mu_);
  std::uint64_t rv_ GUARDED_BY(mu_) = 10;
  std::uint64_t compacted_ GUARDED_BY(mu_) = 0;
  std::vector<std::pair<std::uint64_t, std::string>> log_ GUARDED_BY(mu_);  // (rv, event line)
  std::vector<int> pod_watches_ GUARDED_BY(mu_);
  std::vector<int> conns_ GUARDED_BY(mu_);
  std::vector<std::thread> handlers_ GUARDED_BY(mu_);
};

}  // namespace kvroute::testing
