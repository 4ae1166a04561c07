module github.com/osediff-go/osediff

go 1.26
